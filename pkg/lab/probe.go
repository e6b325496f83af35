package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// DefaultProbeTimeout is how long a probe's first try waits for an
// answer: policy drops, so a blocked flow is one that stays silent (on
// every try: see probeTries).
const DefaultProbeTimeout = time.Second

// probeTries is how many times Probe tries a flow that stays silent before
// calling it blocked, each retry waiting twice as long as the try before
// (1 s, 2 s, 4 s by default): on a busy machine an open path's answer can
// miss the first try's timeout. A definite answer (an echo; refused,
// unreachable, reset) counts at once.
const probeTries = 3

// Result is one probe.
type Result struct {
	From      string `json:"from"`
	To        string `json:"to"`
	Port      int    `json:"port"`
	Protocol  string `json:"protocol"`
	Connected bool   `json:"connected"`
	// Detail says why not (timeout, refused...), and on which try when
	// the flow was tried more than once (also for a flow that connected).
	Detail string `json:"-"`
}

// place is a namespace a probe starts in and its address.
type place struct {
	name  string
	netns string
	addrs []net.IP
}

// resolve finds a workload or host by name; an IP address is a target only.
func (l *Lab) resolve(name string) (place, error) {
	if ip := net.ParseIP(name); ip != nil {
		return place{name: name, addrs: []net.IP{ip}}, nil
	}
	if w, err := l.Workload(name); err == nil {
		p := place{name: w.ID(), netns: w.Netns}
		for _, s := range w.IPs {
			p.addrs = append(p.addrs, net.ParseIP(s))
		}
		return p, nil
	}
	if h, err := l.host(name); err == nil {
		p := place{name: h.Name, netns: h.Netns, addrs: []net.IP{net.ParseIP(h.Addr)}}
		if h.Addr6 != "" {
			p.addrs = append(p.addrs, net.ParseIP(h.Addr6))
		}
		return p, nil
	}
	return place{}, fmt.Errorf("lab %s has no workload or host %q", l.st.Name, name)
}

func (p place) addr(family int) (net.IP, bool) {
	for _, a := range p.addrs {
		if (a.To4() != nil) == (family == 4) {
			return a, true
		}
	}
	return nil, false
}

// Netns is the path of a host's or workload's network namespace (for
// callers that run code there).
func (l *Lab) Netns(name string) (string, error) {
	p, err := l.resolve(name)
	if err != nil {
		return "", err
	}
	if p.netns == "" {
		return "", fmt.Errorf("%s is an address, not a place in the lab", name)
	}
	return filepath.Join("/run/netns", p.netns), nil
}

// Probe tries from → to on port/protocol ("tcp" or "udp") over the
// address family (4 or 6). The error is for a probe that could not be made
// at all (unknown names, no address of the family) or was interrupted; a
// blocked flow is Connected false. A try that times out is retried with
// twice the timeout, up to probeTries tries in all (see retryTimeouts).
func (l *Lab) Probe(ctx context.Context, from, to string, port int, protocol string, family int, timeout time.Duration) (Result, error) {
	r := Result{From: from, To: to, Port: port, Protocol: protocol}
	src, err := l.resolve(from)
	if err != nil {
		return r, err
	}
	if src.netns == "" {
		return r, fmt.Errorf("a probe starts from a workload or a host, not %s", from)
	}
	dst, err := l.resolve(to)
	if err != nil {
		return r, err
	}
	r.From, r.To = src.name, dst.name
	ip, ok := dst.addr(family)
	if !ok {
		return r, fmt.Errorf("%s has no IPv%d address", to, family)
	}
	nsPath := filepath.Join("/run/netns", src.netns)
	r.Connected, r.Detail, err = retryTimeouts(ctx, timeout, func(timeout time.Duration) (bool, string, error) {
		return ProbeIn(ctx, nsPath, ip, port, protocol, timeout)
	})
	return r, err
}

// timedOut is the detail of a try that got no answer within its timeout.
const timedOut = "timeout"

// retryTimeouts makes a probe with try, first with timeout (the default
// when not positive) and while it times out again with twice the timeout,
// up to probeTries tries in all. Only a timeout on every try is a blocked
// flow; a definite answer (connected, or not with any other detail) or an
// error ends it at once. When more than one try was made, the detail says
// so, whatever the answer.
func retryTimeouts(ctx context.Context, timeout time.Duration, try func(timeout time.Duration) (bool, string, error)) (bool, string, error) {
	if timeout <= 0 {
		timeout = DefaultProbeTimeout
	}
	var silent []string // the timeouts of the tries that timed out
	for n := 1; ; n++ {
		connected, detail, err := try(timeout)
		switch {
		case err != nil:
			return false, "", err
		case connected || detail != timedOut:
			if n > 1 {
				answer := detail
				if connected {
					answer = "connected"
				}
				detail = fmt.Sprintf("%s on try %d of %d (timed out after %s)", answer, n, probeTries, strings.Join(silent, ", "))
			}
			return connected, detail, nil
		}
		silent = append(silent, timeout.String())
		if n == probeTries {
			return false, fmt.Sprintf("%s on all %d tries (%s)", timedOut, n, strings.Join(silent, ", ")), nil
		}
		if ctx.Err() != nil {
			return false, "", interrupted(ctx)
		}
		timeout *= 2
	}
}

var probePayload = []byte("tortie-lab-probe\n")

// ProbeIn opens a connection from inside the network namespace at nsPath
// and reports whether the far end echoed; detail says why not. When ctx
// ends first, the probe stops with an error wrapping ErrInterrupted (not a
// blocked flow).
func ProbeIn(ctx context.Context, nsPath string, ip net.IP, port int, protocol string, timeout time.Duration) (bool, string, error) {
	if timeout <= 0 {
		timeout = DefaultProbeTimeout
	}
	netns, err := ns.GetNS(nsPath)
	if err != nil {
		return false, "", err
	}
	defer netns.Close()
	addr := net.JoinHostPort(ip.String(), strconv.Itoa(port))
	var conn net.Conn
	var derr error
	deadline := time.Now().Add(timeout)
	// Only the socket must be made in the namespace: the rest can run on
	// any thread.
	if err := netns.Do(func(ns.NetNS) error {
		d := net.Dialer{Timeout: timeout}
		switch protocol {
		case "tcp", "udp":
			conn, derr = d.DialContext(ctx, protocol, addr)
		default:
			return fmt.Errorf("protocol %q: want tcp or udp", protocol)
		}
		return nil
	}); err != nil {
		return false, "", err
	}
	if derr != nil {
		if ctx.Err() != nil {
			return false, "", interrupted(ctx)
		}
		return false, reason(derr), nil
	}
	defer conn.Close()
	_ = conn.SetDeadline(deadline)
	// ctx ending cuts the reads and writes short, and the probe reports it
	// as such, not as a silent (blocked) flow.
	defer context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })()
	connected, detail := echoes(conn, protocol, timeout, deadline)
	if ctx.Err() != nil {
		return false, "", interrupted(ctx)
	}
	return connected, detail, nil
}

// echoes sends the probe's payload on conn and reports whether it came
// back; detail says why not.
func echoes(conn net.Conn, protocol string, timeout time.Duration, deadline time.Time) (bool, string) {
	buf := make([]byte, len(probePayload))
	if protocol == "tcp" {
		if _, err := conn.Write(probePayload); err != nil {
			return false, reason(err)
		}
		if _, err := io.ReadFull(conn, buf); err != nil {
			return false, reason(err)
		}
		return bytes.Equal(buf, probePayload), ""
	}
	// UDP: resend a few times within the timeout, in case the first
	// datagram waited for neighbour resolution and was dropped.
	done := make(chan struct{})
	defer close(done)
	go func() {
		for i := 0; ; i++ {
			if _, err := conn.Write(probePayload); err != nil {
				return
			}
			select {
			case <-done:
				return
			case <-time.After(timeout / 4):
			}
		}
	}()
	for {
		n, err := conn.Read(buf)
		if err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) && time.Now().Before(deadline) {
				return false, "refused"
			}
			return false, reason(err)
		}
		if bytes.Equal(buf[:n], probePayload) {
			return true, ""
		}
	}
}

func reason(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return timedOut
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable"
	}
	return err.Error()
}

// MatrixOptions say what to probe.
type MatrixOptions struct {
	Ports     []int
	Protocols []string
	Family    int
	Timeout   time.Duration
	// Parallel probes at most (default 256).
	Parallel int
}

// Matrix probes every ordered pair of distinct workloads on every
// port/protocol, in parallel, and returns the results sorted. A flow holds
// its place among the Parallel for all its tries (see Probe), so silent
// flows are retried together: a matrix of at most Parallel flows takes at
// most the sum of the tries' timeouts (7 × Timeout with probeTries 3) to
// probe, however many of its flows are blocked.
func (l *Lab) Matrix(ctx context.Context, o MatrixOptions) ([]Result, error) {
	if len(o.Ports) == 0 {
		o.Ports = []int{80}
	}
	if len(o.Protocols) == 0 {
		o.Protocols = []string{"tcp"}
	}
	if o.Family == 0 {
		o.Family = 4
	}
	if o.Parallel <= 0 {
		o.Parallel = 256
	}
	wls := l.SortedWorkloads()
	var jobs []Result
	for _, proto := range o.Protocols {
		for _, port := range o.Ports {
			for _, a := range wls {
				for _, b := range wls {
					if a != b {
						jobs = append(jobs, Result{From: a.ID(), To: b.ID(), Port: port, Protocol: proto})
					}
				}
			}
		}
	}
	errs := probeAll(ctx, jobs, o.Parallel, func(j Result) (Result, error) {
		return l.Probe(ctx, j.From, j.To, j.Port, j.Protocol, o.Family, o.Timeout)
	})
	if ctx.Err() != nil {
		return nil, fmt.Errorf("matrix: %w", interrupted(ctx))
	}
	if len(errs) > 0 {
		return jobs, errors.Join(errs...)
	}
	return jobs, nil
}

// probeAll replaces each of jobs with what probe makes of it, at most
// parallel at a time, each with all its tries; it returns the errors of
// the probes that could not be made (a job stays as it was). When ctx
// ends, the jobs not yet started are left as they are.
func probeAll(ctx context.Context, jobs []Result, parallel int, probe func(Result) (Result, error)) []error {
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for i := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			j := &jobs[i]
			r, err := probe(*j)
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s → %s %s/%d: %w", j.From, j.To, j.Protocol, j.Port, err))
				mu.Unlock()
				return
			}
			*j = r
		}()
	}
	wg.Wait()
	return errs
}

// PrintMatrix writes one table per protocol/port: a row per source, a
// column per destination, "ok" where it connected and "-" where not.
func PrintMatrix(w io.Writer, results []Result) {
	type key struct {
		proto string
		port  int
	}
	var keys []key
	seen := map[key]bool{}
	names := map[string]bool{}
	cell := map[key]map[[2]string]bool{}
	for _, r := range results {
		k := key{r.Protocol, r.Port}
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
			cell[k] = map[[2]string]bool{}
		}
		names[r.From], names[r.To] = true, true
		cell[k][[2]string{r.From, r.To}] = r.Connected
	}
	var order []string
	for n := range names {
		order = append(order, n)
	}
	sort.Strings(order)
	total, ok := 0, 0
	for _, k := range keys {
		fmt.Fprintf(w, "%s/%d (row: from, column: to)\n", k.proto, k.port)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprint(tw, "\t"+strings.Join(order, "\t")+"\n")
		for _, a := range order {
			row := []string{a}
			for _, b := range order {
				c, probed := cell[k][[2]string{a, b}]
				switch {
				case !probed:
					row = append(row, ".")
				case c:
					row = append(row, "ok")
					total++
					ok++
				default:
					row = append(row, "-")
					total++
				}
			}
			fmt.Fprint(tw, strings.Join(row, "\t")+"\n")
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "%d of %d flows connected\n", ok, total)
}
