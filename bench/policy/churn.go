package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tortie/tortie/bench/internal/procstat"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
)

// churnResult is remote endpoints changing address at a steady rate, at
// the cold start's scale (issue 18).
type churnResult struct {
	want                float64 // updates/s asked for
	written             int
	took                time.Duration
	received            float64 // endpoint updates the agent counted
	latP50, latP99      float64 // seconds, the agent's sync latency over the churn
	latCount            float64
	applies             float64
	applyMean           float64 // seconds, the policy component's incremental applies
	cpu                 time.Duration
	rssBefore, rssAfter int64 // kB
	hwm                 int64 // kB, peak during the churn
}

// churn changes the address of remote endpoints of the cold-start data,
// o.churnRate a second for o.churn, in batches every 10 ms, while a is
// running: only IP set members change, no rule. The latency is the agent's
// own (tortie_sync_latency_seconds: from an update's arrival to the end of
// the apply that programmed it), read before and after.
func (l *lab) churn(o options, a *agent, cl *client.Client) *churnResult {
	r := &churnResult{want: float64(o.churnRate)}
	before, err := l.histogram("tortie_sync_latency_seconds")
	if err != nil {
		fatalf("churn: %v", err)
	}
	updates0, _ := l.metric(`tortie_datastore_updates_total{kind="WorkloadEndpoint"}`)
	applies0, _ := l.metric(`tortie_apply_duration_seconds_count{component="policy",mode="incremental"}`)
	applySum0, _ := l.metric(`tortie_apply_duration_seconds_sum{component="policy",mode="incremental"}`)
	cpu0, _ := procstat.CPU(a.pid)
	r.rssBefore, _ = procstat.StatusKB(a.pid, "VmRSS")
	_ = procstat.ResetPeak(a.pid)

	perNS := o.endpoints / 100
	per := max(o.churnRate/100, 1) // updates per 10 ms
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	ctx := context.Background()
	t0 := time.Now()
	for k := 0; time.Since(t0) < o.churn; k++ {
		<-tick.C
		rs := make([]v3.Resource, 0, per)
		for j := range per {
			// Endpoint i (not 0: that one is local) of namespace n, moved
			// between two addresses.
			seq := k*per + j
			n, i := seq%100, 1+(seq/100)%(perNS-1)
			round := seq / (100 * (perNS - 1))
			doc := coldEndpoint(n, i, perNS, coldAddr(n, i, round%2 == 0))
			res, err := v3.Decode([]byte(doc))
			if err != nil {
				fatalf("churn: %v", err)
			}
			rs = append(rs, res)
		}
		if _, err := cl.Batch(ctx, client.OpApply, rs); err != nil {
			fatalf("churn: %v", err)
		}
		r.written += len(rs)
	}
	r.took = time.Since(t0)
	time.Sleep(time.Second) // the last batches programmed
	after, err := l.histogram("tortie_sync_latency_seconds")
	if err != nil {
		fatalf("churn: %v", err)
	}
	delta := make([][2]float64, len(after))
	for i, b := range after {
		delta[i] = [2]float64{b[0], b[1] - before[i][1]}
	}
	r.latCount = delta[len(delta)-1][1]
	r.latP50, r.latP99 = quantile(delta, 0.5), quantile(delta, 0.99)
	updates1, _ := l.metric(`tortie_datastore_updates_total{kind="WorkloadEndpoint"}`)
	applies1, _ := l.metric(`tortie_apply_duration_seconds_count{component="policy",mode="incremental"}`)
	applySum1, _ := l.metric(`tortie_apply_duration_seconds_sum{component="policy",mode="incremental"}`)
	r.received = updates1 - updates0
	r.applies = applies1 - applies0
	r.applyMean = (applySum1 - applySum0) / max(r.applies, 1)
	cpu1, _ := procstat.CPU(a.pid)
	r.cpu = cpu1 - cpu0
	r.rssAfter, _ = procstat.StatusKB(a.pid, "VmRSS")
	r.hwm, _ = procstat.StatusKB(a.pid, "VmHWM")
	return r
}

// histogram reads a Prometheus histogram from the agent: cumulative
// (upper bound, count) pairs, +Inf last.
func (l *lab) histogram(name string) ([][2]float64, error) {
	code, body := l.httpGet(9091, "/metrics")
	if code != 200 {
		return nil, fmt.Errorf("metrics: %d", code)
	}
	var out [][2]float64
	for _, line := range strings.Split(body, "\n") {
		rest, ok := strings.CutPrefix(line, name+`_bucket{le="`)
		if !ok {
			continue
		}
		le, v, ok := strings.Cut(rest, `"} `)
		if !ok {
			continue
		}
		ub, err1 := strconv.ParseFloat(le, 64)
		if le == "+Inf" {
			ub, err1 = math.Inf(1), nil
		}
		n, err2 := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%s: bad line %q", name, line)
		}
		out = append(out, [2]float64{ub, n})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no histogram %s", name)
	}
	slices.SortFunc(out, func(a, b [2]float64) int { return int(math.Copysign(1, a[0]-b[0])) })
	return out, nil
}

// quantile interpolates within the bucket holding the q-th observation,
// as Prometheus' histogram_quantile does.
func quantile(buckets [][2]float64, q float64) float64 {
	total := buckets[len(buckets)-1][1]
	if total == 0 {
		return 0
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for _, b := range buckets {
		if b[1] >= rank {
			if math.IsInf(b[0], 1) {
				return lower
			}
			if b[1] == below {
				return b[0]
			}
			return lower + (b[0]-lower)*(rank-below)/(b[1]-below)
		}
		lower, below = b[0], b[1]
	}
	return lower
}

func (r *churnResult) print(w io.Writer, o options) {
	fmt.Fprintf(w, "| endpoint churn: remote endpoints changing address, %.0f/s asked for %v (IP set members only, no rule) | **%.0f/s written** (%d in %v); agent's sync latency (from an update's arrival to the end of the apply that programmed it, over %.0f bursts): p50 %s, **p99 %s**; %.0f incremental applies, mean %s; agent CPU %s (%.0f %% of a core); RSS %s → %s, peak %s | apply p99 < 100 ms | — |\n",
		r.want, o.churn, float64(r.written)/r.took.Seconds(), r.written, r.took.Round(time.Millisecond), r.latCount,
		ms(time.Duration(r.latP50*float64(time.Second))), ms(time.Duration(r.latP99*float64(time.Second))),
		r.applies, ms(time.Duration(r.applyMean*float64(time.Second))), sec(r.cpu), 100*r.cpu.Seconds()/r.took.Seconds(),
		mb(r.rssBefore), mb(r.rssAfter), mb(r.hwm))
}
