package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tortie/tortie/pkg/nodestatus"
)

// HostStatus is what a host's agent says about itself.
type HostStatus struct {
	Host
	AgentPID    int                     `json:"agentPID"`
	AgentAlive  bool                    `json:"agentAlive"`
	Ready       bool                    `json:"ready"`
	Peers       int                     `json:"peers"`
	Peers4      int                     `json:"peers4"`
	Established int                     `json:"established"`
	Sessions    []nodestatus.PeerStatus `json:"sessions,omitempty"`
	// Wireguard is the host's WireGuard device and peers (--encryption
	// wireguard).
	Wireguard *nodestatus.WireguardStatus `json:"wireguard,omitempty"`
	Error     string                      `json:"error,omitempty"`
}

// Status is the whole lab's.
type Status struct {
	Name     string `json:"name"`
	Phase    string `json:"phase"`
	Topology string `json:"topology"`
	Encap    string `json:"encap"`
	// Encryption is none or wireguard.
	Encryption string       `json:"encryption,omitempty"`
	Endpoint   string       `json:"endpoint"`
	Datastore  bool         `json:"datastoreAlive"`
	Hosts      []HostStatus `json:"hosts"`
	Workloads  []*Workload  `json:"workloads"`
	Procs      []Proc       `json:"processes"`
	// Kube is the Kubernetes API of a --kube-api or --kubernetes lab.
	Kube *KubeStatus `json:"kube,omitempty"`
	// Cluster is a --kubernetes lab's nodes and tortie's pods.
	Cluster *ClusterStatus `json:"cluster,omitempty"`
}

var httpClient = &http.Client{Timeout: 2 * time.Second}

// hostStatus asks a host's agent over the underlay (the root namespace
// reaches every host through the lab's root leg); in a --kubernetes lab,
// the DaemonSet's agent on the host's loopback.
func (l *Lab) hostStatus(ctx context.Context, h Host) HostStatus {
	hs := HostStatus{Host: h}
	client, base := httpClient, "http://"+net.JoinHostPort(h.Addr, strconv.Itoa(HealthPort))
	if l.st.Options.Kubernetes {
		client, base = nsHTTPClient(filepath.Join("/run/netns", h.Netns)), "http://"+net.JoinHostPort("127.0.0.1", strconv.Itoa(clusterHealthPort))
		hs.AgentAlive = true // the agent is a pod: its answer tells
	}
	for _, p := range l.st.Procs {
		if p.Role == "agent" && p.Name == h.Name {
			hs.AgentPID, hs.AgentAlive = p.PID, p.alive()
		}
	}
	if !hs.AgentAlive {
		hs.Error = "agent not running"
		return hs
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readiness", nil)
	resp, err := client.Do(req)
	if err != nil {
		hs.Error = err.Error()
		return hs
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	hs.Ready = resp.StatusCode == http.StatusOK
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, base+nodestatus.StatusPath, nil)
	resp, err = client.Do(req)
	if err != nil {
		hs.Error = err.Error()
		return hs
	}
	defer resp.Body.Close()
	var st nodestatus.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		hs.Error = "BGP status: " + err.Error()
		return hs
	}
	hs.Sessions, hs.Wireguard = st.Peers, st.Wireguard
	for _, p := range st.Peers {
		hs.Peers++
		if p.Family == nodestatus.FamilyIPv4 {
			hs.Peers4++
		}
		if p.State == "Established" {
			hs.Established++
		}
	}
	return hs
}

// Status gathers the lab's state and asks every agent.
func (l *Lab) Status(ctx context.Context) *Status {
	s := &Status{Name: l.st.Name, Phase: l.st.Phase, Topology: l.st.Options.Topology, Encap: l.st.Options.Encap,
		Encryption: l.st.Options.Encryption, Endpoint: l.st.Endpoint, Workloads: l.st.Workloads, Procs: l.st.Procs}
	for _, p := range l.st.Procs {
		if p.Role == "datastore" {
			s.Datastore = p.alive()
		}
	}
	for _, h := range l.st.Hosts {
		s.Hosts = append(s.Hosts, l.hostStatus(ctx, h))
	}
	s.Kube = l.kubeStatus(ctx)
	if l.st.Options.Kubernetes && s.Kube != nil && s.Kube.Ready {
		cs, err := l.clusterStatus(ctx)
		if err != nil {
			s.Kube.Error = err.Error()
		}
		s.Cluster = cs
	}
	return s
}

// Print writes the status as tables.
func (s *Status) Print(w io.Writer) {
	ds := "running"
	if !s.Datastore {
		ds = "NOT RUNNING"
	}
	enc := ""
	if s.Encryption != "" && s.Encryption != EncryptionNone {
		enc = ", encryption " + s.Encryption
	}
	fmt.Fprintf(w, "lab %s (%s): topology %s, encapsulation %s%s; datastore %s at %s\n", s.Name, s.Phase, s.Topology, s.Encap, enc, ds, s.Endpoint)
	if k := s.Kube; k != nil {
		api := "ready"
		switch {
		case !k.APIServerAlive:
			api = "NOT RUNNING"
		case !k.Ready:
			api = "not ready: " + k.Error
		}
		ctl := "; tortie-kube-controllers ready"
		switch {
		case k.Cluster:
			ctl = "" // a pod: in the table below
		case !k.ControllersAlive:
			ctl = "; tortie-kube-controllers NOT RUNNING"
		case !k.ControllersReady:
			ctl = "; tortie-kube-controllers not ready"
		}
		fmt.Fprintf(w, "Kubernetes API %s (%s)%s\nKUBECONFIG=%s (or `tortie lab kubectl ...`)\n", k.Server, api, ctl, k.Kubeconfig)
	}
	if c := s.Cluster; c != nil {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tSTATUS\tTORTIE PODS")
		for _, n := range c.Nodes {
			ready := "Ready"
			if !n.Ready {
				ready = "NotReady: " + n.Message
			}
			var pods []string
			for _, p := range c.Pods {
				if p.Node == n.Name {
					r := "ready"
					if !p.Ready {
						r = "not ready, " + p.Phase
					}
					pods = append(pods, fmt.Sprintf("%s (%s, %d restarts)", p.Name, r, p.Restarts))
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", n.Name, ready, strings.Join(pods, ", "))
		}
		tw.Flush()
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tNODE\tADDRESS\tAGENT\tBGP SESSIONS")
	for _, h := range s.Hosts {
		agent := "ready"
		switch {
		case !h.AgentAlive:
			agent = "not running"
		case !h.Ready:
			agent = "not ready"
		}
		addr := h.Addr
		if h.Addr6 != "" {
			addr += "," + h.Addr6
		}
		var peers []string
		for _, p := range h.Sessions {
			peers = append(peers, fmt.Sprintf("%s %s", p.Address, p.State))
		}
		if h.AgentPID != 0 {
			agent += fmt.Sprintf(" (pid %d)", h.AgentPID)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d Established: %s\n", h.Name, h.Node, addr, agent, h.Established, h.Peers, strings.Join(peers, ", "))
	}
	tw.Flush()
	fmt.Fprintln(w)
	if s.Kube != nil && s.Kube.Cluster {
		fmt.Fprintf(w, "workloads are pods: `tortie lab kubectl --name %s get pods -A -o wide`\n", s.Name)
		return
	}
	PrintWorkloads(w, s.Workloads)
}

// PrintWorkloads writes the workloads as a table.
func PrintWorkloads(w io.Writer, wls []*Workload) {
	if len(wls) == 0 {
		fmt.Fprintln(w, "no workloads (add one with `tortie lab workload add NAME --host h1`)")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKLOAD\tHOST\tADDRESSES\tINTERFACE\tLABELS\tLISTENS")
	for _, wl := range wls {
		var labels []string
		for k, v := range wl.Labels {
			labels = append(labels, k+"="+v)
		}
		sort.Strings(labels)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", wl.ID(), wl.Host, strings.Join(wl.IPs, ","), wl.Interface,
			strings.Join(labels, ","), strings.Join(wl.Listen, ","))
	}
	tw.Flush()
}
