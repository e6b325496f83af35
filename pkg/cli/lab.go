package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/kube/apiserver"
	"github.com/tortie/tortie/pkg/lab"
)

// labExit ends the process with a status of the command's choosing (probe:
// 0 connected, 1 blocked, 2 error; exec: the command's own). A variable so
// that tests can catch it.
var labExit = os.Exit

func newLabCommand(g *globals) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "A whole tortie cluster on this machine, made of network namespaces",
		Long: `tortie lab builds a cluster out of network namespaces on this machine, with
the real parts: an embedded etcd (tortie datastore serve), one tortie-node per
host, workloads made by the real CNI plugin, real BGP (and BIRD 2 as a
top-of-rack router). Needs root.

  tortie lab up --hosts 3                 # hosts NAME-h1..h3, agents ready, BGP up
  tortie lab workload add web --host h1 --namespace shop --labels app=web
  tortie lab matrix --ports 80,81 --protocols tcp,udp
  tortie apply -f policy.yaml             # the lab wrote ` + DefaultConfigFile + `
  tortie lab down

With --kube-api, up also runs a Kubernetes API server on the lab's etcd and
tortie-kube-controllers, and every workload is a pod the CNI plugin reads:

  tortie lab up --kube-api --hosts 2
  tortie lab kubectl apply -f networkpolicy.yaml
  tortie lab kubectl label pod web -n shop tier=front

Every namespace, interface, process and file a lab makes is named from its
name and recorded in /run/tortie/lab/NAME/state.json; "lab down" removes
exactly that, also after a crash. Several labs with different names coexist.`,
	}
	cmd.PersistentFlags().StringVar(&name, "name", "", "the lab's name (default: the only lab, else "+lab.DefaultName+")")
	open := func() (*lab.Lab, error) { return lab.Open(name) }
	cmd.AddCommand(
		newLabUpCommand(g, &name),
		newLabDownCommand(g, &name),
		newLabStatusCommand(g, open),
		newLabListCommand(g),
		newLabWorkloadCommand(g, open),
		newLabExecCommand(g, open),
		newLabProbeCommand(g, open),
		newLabMatrixCommand(g, open),
		newLabAgentCommand(g, open),
		newLabLinkCommand(g, open),
		newLabServeCommand(g),
		newLabKubectlCommand(g, open),
	)
	return cmd
}

func newLabUpCommand(g *globals, name *string) *cobra.Command {
	o := lab.Options{}
	var binDir string
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Build a lab and wait until every agent is ready and every BGP session Established",
		Long: `Build a lab: the datastore, a fabric (a bridge; two subnets behind a router for
--encap vxlan-crosssubnet), --hosts host namespaces NAME-h1... each running
tortie-node, and for --topology tor a router namespace running BIRD 2 that
every host peers with (a global BGPPeer; the mesh is off), for rr the first
host a route reflector (the mesh is off). Waits until every agent is ready
and every BGP session is Established, prints what it made, and points the
CLI at the lab's datastore (` + DefaultConfigFile + `, when absent or written by
a lab). Idempotent: up of a lab that is up reports it and changes nothing.

Interrupted (Ctrl-C, SIGTERM) or failed at any point, up removes everything
it had made (processes, namespaces, interfaces, its state file), exactly as
"lab down" would, and exits non-zero saying so; a second Ctrl-C does not cut
that removal short. Only if the removal itself fails does the state file
stay, and "tortie lab down --name NAME" finishes the job.

--kube-api: after the datastore, a kube-apiserver (Kubernetes ` + apiserver.Version + `, built into
the cache by scripts/build-kubernetes.sh) as a lab process, its storage in the
lab's etcd under /registry, on the root namespace's lab address; an admin
kubeconfig in the lab's directory; a Kubernetes Node per host; and
tortie-kube-controllers (beside tortie, else on PATH), which writes the
namespaces' and service accounts' profiles and the NetworkPolicies as Calico
resources. Workloads are then pods (bound to their host's node, their ports
named serve-PORT-PROTO), which the CNI plugin reads; "tortie lab kubectl"
runs kubectl against the lab.

--kubernetes: a real Kubernetes cluster, tortie installed as an operator
installs it. After the datastore (and BIRD), a control plane in the root
namespace (kube-apiserver on the lab's etcd, kube-controller-manager,
kube-scheduler), then every host becomes a node: containerd, a kubelet and an
nftables kube-proxy in the host's namespace, with the archives of --images
(make images: tortie's images, pause and the echoserver test image) and
Kubernetes' test images from the Kubernetes cache imported. Then tortie is
installed by "kubectl apply -f deploy/tortie.yaml" alone, its ConfigMap's
etcd_endpoints set to the lab's etcd (the manifest applied is kept as
/run/tortie/lab/NAME/tortie.yaml). Up returns when every node is Ready, every
tortie pod ready and every BGP session Established. Workloads are then pods:
"tortie lab kubectl" (or the printed KUBECONFIG) runs kubectl against it, and
"lab down" removes the nodes with their containers, shims, cgroups and mounts.

  make images && tortie lab up --kubernetes --hosts 3
  tortie lab kubectl create deployment web --image docker.io/tortie/echoserver:v0.1.0-dev --replicas 3`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Name = *name
			if o.Name == "" {
				o.Name = lab.DefaultName
			}
			if binDir != "" {
				o.Bins = lab.Binaries{Tortie: filepath.Join(binDir, "tortie"), Node: filepath.Join(binDir, "tortie-node"), CNI: filepath.Join(binDir, "tortie-cni")}
			}
			o.Log = g.out
			t0 := time.Now()
			l, existed, err := lab.Up(cmd.Context(), o)
			if err != nil {
				return err
			}
			if existed {
				fmt.Fprintf(g.out, "lab %s is already up: nothing to do\n\n", l.Name())
			} else {
				fmt.Fprintf(g.out, "lab %s is up (%v)\n\n", l.Name(), time.Since(t0).Round(time.Millisecond))
			}
			printMade(g, l)
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Hosts, "hosts", 3, "number of hosts")
	f.StringVar(&o.Topology, "topology", lab.TopologyMesh, "mesh (node-to-node BGP mesh), tor (BIRD 2 router, a global BGPPeer) or rr (h1 a route reflector)")
	f.StringVar(&o.Encap, "encap", lab.EncapNone, "none, vxlan, or vxlan-crosssubnet (hosts in two subnets behind a router)")
	f.StringVar(&o.Encryption, "encryption", lab.EncryptionNone, "none, or wireguard (traffic between hosts' workloads encrypted; userspace WireGuard where the kernel has none)")
	f.StringVar(&o.Pool, "pool", lab.DefaultPool, "the workloads' IPv4 pool")
	f.StringVar(&o.Pool6, "pool6", "", "the workloads' IPv6 pool (implies --ipv6; default "+lab.DefaultPool6+")")
	f.BoolVar(&o.IPv6, "ipv6", false, "dual stack: IPv6 on the underlay, the agents and the workloads")
	f.BoolVar(&o.KubeAPI, "kube-api", false, "also a Kubernetes API server on the lab's etcd and tortie-kube-controllers; workloads are pods")
	f.BoolVar(&o.Kubernetes, "kubernetes", false, "make the hosts Kubernetes nodes (kubelet, containerd, kube-proxy) and install tortie with kubectl apply -f deploy/tortie.yaml")
	f.StringVar(&o.Images, "images", "", "with --kubernetes: the directory of the image archives every node imports (default: images beside tortie, which `make images` fills)")
	f.StringVar(&binDir, "bin-dir", "", "where tortie, tortie-node and tortie-cni are (default: beside this tortie, else PATH)")
	f.DurationVar(&o.Timeout, "timeout", 0, "how long to wait for the agents and sessions (default 90s; with --kubernetes, each step of the cluster's, default 5m)")
	return cmd
}

func printMade(g *globals, l *lab.Lab) {
	st := l.State()
	fmt.Fprintf(g.out, "datastore   %s (pid %d; root namespace interface %s)\n", st.Endpoint, pidOf(st, "datastore", "etcd"), st.RootLink)
	fmt.Fprintf(g.out, "topology    %s, encapsulation %s, pool %s %s\n", st.Options.Topology, st.Options.Encap, st.Options.Pool, st.Options.Pool6)
	fmt.Fprintf(g.out, "namespaces  %s\n", strings.Join(st.Netns, " "))
	for _, h := range st.Hosts {
		a := h.Addr
		if h.Addr6 != "" {
			a += " " + h.Addr6
		}
		if st.Options.Kubernetes {
			fmt.Fprintf(g.out, "host        %-4s Kubernetes node %s, %s (tortie-node: a pod of DaemonSet %s/tortie-node)\n", h.Name, h.Node, a, lab.TortieNamespace)
			continue
		}
		fmt.Fprintf(g.out, "host        %-4s node %s, %s, tortie-node pid %d\n", h.Name, h.Node, a, pidOf(st, "agent", h.Name))
	}
	if st.Options.Topology == lab.TopologyToR {
		fmt.Fprintf(g.out, "router      BIRD 2 pid %d (birdc -s %s show protocols)\n", pidOf(st, "bird", "router"), lab.BirdSocket(st.Name))
	}
	if k := st.Kube; k != nil && st.Options.Kubernetes {
		fmt.Fprintf(g.out, "kubernetes  %s (kube-apiserver pid %d); tortie installed by kubectl apply -f %s\n", k.Server, pidOf(st, "kube-apiserver", "apiserver"), lab.ManifestFile(st.Name))
		fmt.Fprintf(g.out, "KUBECONFIG  %s (or `tortie lab kubectl ...`)\n", k.Kubeconfig)
	} else if k != nil {
		fmt.Fprintf(g.out, "kubernetes  %s (kube-apiserver pid %d, tortie-kube-controllers pid %d)\n", k.Server, pidOf(st, "kube-apiserver", "apiserver"), pidOf(st, "kube-controllers", "controllers"))
		fmt.Fprintf(g.out, "KUBECONFIG  %s (or `tortie lab kubectl ...`)\n", k.Kubeconfig)
	}
	fmt.Fprintf(g.out, "state       %s\n", filepath.Join(lab.Dir(st.Name), "state.json"))
	if st.Config != nil {
		fmt.Fprintf(g.out, "CLI config  %s (tortie apply/get reach the lab without flags)\n", st.Config.Path)
	} else {
		fmt.Fprintf(g.out, "CLI config  %s (use --config %s)\n", lab.ConfigFile(st.Name), lab.ConfigFile(st.Name))
	}
}

func pidOf(st lab.State, role, name string) int {
	for _, p := range st.Procs {
		if p.Role == role && p.Name == name {
			return p.PID
		}
	}
	return 0
}

func newLabDownCommand(g *globals, name *string) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Remove a lab: every namespace, interface, process and file it made",
		Long: `Remove a lab: every process, namespace, interface and file its state file
records, and the CLI config it wrote (what was there before is put back).
Works on a lab half made or left by a crash. Interrupted (Ctrl-C), it still
kills the lab's processes, then stops and keeps the state file: down again
finishes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return lab.Down(cmd.Context(), *name, g.out)
		},
	}
}

func newLabListCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the labs on this machine",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			names, err := lab.Names()
			if err != nil {
				return err
			}
			for _, n := range names {
				fmt.Fprintln(g.out, n)
			}
			return nil
		},
	}
}

func newLabStatusCommand(g *globals, open func() (*lab.Lab, error)) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show a lab's hosts, agents' health, BGP sessions and workloads",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			s := l.Status(cmd.Context())
			switch output {
			case "json":
				enc := json.NewEncoder(g.out)
				enc.SetIndent("", "  ")
				return enc.Encode(s)
			case "table", "":
				s.Print(g.out)
				return nil
			}
			return fmt.Errorf("-o %q: want table or json", output)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

func newLabWorkloadCommand(g *globals, open func() (*lab.Lab, error)) *cobra.Command {
	cmd := &cobra.Command{Use: "workload", Short: "Add, delete and list workloads", Aliases: []string{"workloads", "wl"}}
	var spec lab.WorkloadSpec
	var labels, listen string
	add := &cobra.Command{
		Use:   "add NAME --host H [--namespace NS] [--labels k=v,...] [--listen tcp:80,udp:80,...] [--ip ADDR]",
		Short: "Create a workload through the CNI plugin, with a server answering its ports",
		Long: `Create a workload (a Kubernetes pod NS/NAME, as the CNI plugin sees it) on a
host: a network namespace, put on the network by the real CNI plugin run in
the host's namespace, with the built-in server answering every --listen port
(TCP accepts and echoes; UDP echoes). The namespace's profile kns.NS is
written if missing, as Calico's controllers do for a Kubernetes namespace.
With --ip the plugin assigns exactly that address (CNI_ARGS IP): deleting a
workload and adding one with its address on another host moves the address.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			spec.Name = args[0]
			if spec.Labels, err = parseLabelList(labels); err != nil {
				return err
			}
			if cmd.Flags().Changed("listen") {
				spec.Listen = datastore.SplitList(listen)
				if spec.Listen == nil {
					spec.Listen = []string{}
				}
			}
			w, err := l.AddWorkload(cmd.Context(), spec)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.out, "workload %s on %s: %s (interface %s), listening on %s\n", w.ID(), w.Host, strings.Join(w.IPs, ", "), w.Interface, strings.Join(w.Listen, ","))
			return nil
		},
	}
	add.Flags().StringVar(&spec.Host, "host", "", "the host (h1, ...)")
	add.Flags().StringVarP(&spec.Namespace, "namespace", "n", "default", "the Kubernetes namespace")
	add.Flags().StringVar(&labels, "labels", "", "pod labels, k=v,k=v")
	add.Flags().StringVar(&listen, "listen", strings.Join(lab.DefaultListen, ","), "ports the server answers, tcp:PORT,udp:PORT,...")
	add.Flags().StringVar(&spec.IP, "ip", "", "the address to ask the CNI plugin for (one per family, comma-separated), e.g. one another workload had")
	_ = add.MarkFlagRequired("host")
	del := &cobra.Command{
		Use:   "del NAME|NS/NAME...",
		Short: "Delete workloads (CNI DEL, then the namespace)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			for _, a := range args {
				if err := l.DelWorkload(cmd.Context(), a); err != nil {
					return err
				}
				fmt.Fprintf(g.out, "workload %s deleted\n", a)
			}
			return nil
		},
	}
	var output string
	list := &cobra.Command{
		Use:   "list",
		Short: "List the workloads",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			if output == "json" {
				return json.NewEncoder(g.out).Encode(l.SortedWorkloads())
			}
			lab.PrintWorkloads(g.out, l.SortedWorkloads())
			return nil
		},
	}
	list.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	cmd.AddCommand(add, del, list)
	return cmd
}

func parseLabelList(s string) (map[string]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range datastore.SplitList(s) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("label %q: want key=value", kv)
		}
		out[k] = v
	}
	return out, nil
}

func newLabExecCommand(g *globals, open func() (*lab.Lab, error)) *cobra.Command {
	return &cobra.Command{
		Use:   "exec HOST|WORKLOAD -- CMD...",
		Short: "Run a command in a host's or a workload's network namespace",
		Long: `Run a command in a host's or a workload's network namespace, with
ETCD_ENDPOINTS set to the lab's datastore (and KUBECONFIG to its admin
kubeconfig in a --kube-api lab); the exit status is the command's.
In a host, "tortie node status" asks that host's agent. A terminal's Ctrl-C
reaches the command itself; tortie, interrupted (Ctrl-C, SIGTERM), also
sends it SIGTERM, then waits for it and exits with its status (128+N for a
command killed by signal N).`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			nsPath, err := l.Netns(args[0])
			if err != nil {
				return err
			}
			c := exec.CommandContext(cmd.Context(), "ip", append([]string{"netns", "exec", filepath.Base(nsPath)}, args[1:]...)...)
			c.Stdin, c.Stdout, c.Stderr = g.in, g.out, g.errw
			c.Env = append(os.Environ(), "ETCD_ENDPOINTS="+l.Endpoint())
			if kc := l.Kubeconfig(); kc != "" {
				c.Env = append(c.Env, "KUBECONFIG="+kc)
			}
			return runForStatus(c)
		},
	}
}

// runForStatus runs c, interrupted by SIGTERM when the command's context
// ends, and exits with its status (128+N for a command killed by signal
// N, as a shell says it).
func runForStatus(c *exec.Cmd) error {
	// Interrupted, tortie asks the command to stop (SIGTERM) and waits
	// for it: it may clean up, or (a shell) carry on.
	c.Cancel = func() error { return c.Process.Signal(syscall.SIGTERM) }
	err := c.Run()
	if c.ProcessState == nil { // it did not start
		return err
	}
	// Its status is the answer, also when tortie was interrupted
	// meanwhile (Run's error then is the context's).
	code := c.ProcessState.ExitCode()
	if ws, ok := c.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		code = 128 + int(ws.Signal())
	}
	if code != 0 {
		labExit(code)
	}
	return nil
}

func newLabKubectlCommand(g *globals, open func() (*lab.Lab, error)) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kubectl ARGS...",
		Short: "Run kubectl against a --kube-api lab's Kubernetes API",
		Long: `Run the cached kubectl (Kubernetes ` + apiserver.Version + `, scripts/build-kubernetes.sh) with
KUBECONFIG set to the lab's admin kubeconfig; stdin, stdout and stderr are
kubectl's, and so is the exit status. tortie's own flags (--name) go before
"kubectl"; everything after it is kubectl's (a first argument that is a flag
of kubectl's: put "--" before it).

  tortie lab kubectl get pods -A
  tortie lab --name demo kubectl apply -f policy.yaml
  tortie lab kubectl -- -n shop label pod web tier=front`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			c, err := l.KubectlCommand(cmd.Context(), args...)
			if err != nil {
				return err
			}
			c.Stdin, c.Stdout, c.Stderr = g.in, g.out, g.errw
			return runForStatus(c)
		},
	}
	// Everything from the first argument on is kubectl's.
	cmd.Flags().SetInterspersed(false)
	return cmd
}

// probe statuses.
const (
	probeConnected = 0
	probeBlocked   = 1
	probeError     = 2
)

func newLabProbeCommand(g *globals, open func() (*lab.Lab, error)) *cobra.Command {
	var port int
	var protocol string
	var ipv6 bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "probe FROM TO --port P [--protocol tcp|udp]",
		Short: "Probe one flow: exit 0 connected, 1 blocked, 2 error",
		Long: `Open a connection from FROM (a workload NS/NAME or NAME, or a host) to TO (a
workload, a host or an address) and wait for the built-in server's echo.
Exit status 0: connected; 1: blocked (no echo within --timeout, or
refused); 2: the probe could not be made.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			fail := func(err error) error {
				fmt.Fprintln(g.errw, "error:", err)
				labExit(probeError)
				return nil
			}
			l, err := open()
			if err != nil {
				return fail(err)
			}
			fam := 4
			if ipv6 {
				fam = 6
			}
			r, err := l.Probe(cmd.Context(), args[0], args[1], port, strings.ToLower(protocol), fam, timeout)
			if err != nil {
				return fail(err)
			}
			if r.Connected {
				fmt.Fprintf(g.out, "%s → %s %s/%d: connected\n", r.From, r.To, r.Protocol, r.Port)
				return nil
			}
			fmt.Fprintf(g.out, "%s → %s %s/%d: blocked (%s)\n", r.From, r.To, r.Protocol, r.Port, r.Detail)
			labExit(probeBlocked)
			return nil
		},
	}
	cmd.Flags().IntVar(&port, "port", 80, "destination port")
	cmd.Flags().StringVar(&protocol, "protocol", "tcp", "tcp or udp")
	cmd.Flags().BoolVar(&ipv6, "ipv6", false, "probe the IPv6 addresses")
	cmd.Flags().DurationVar(&timeout, "timeout", lab.DefaultProbeTimeout, "the first try's timeout; a flow silent on all three tries (the timeout doubling each time) is blocked")
	return cmd
}

func newLabMatrixCommand(g *globals, open func() (*lab.Lab, error)) *cobra.Command {
	var ports, protocols, output string
	var ipv6 bool
	mo := lab.MatrixOptions{}
	cmd := &cobra.Command{
		Use:   "matrix [--ports 80,81] [--protocols tcp,udp] [-o table|json]",
		Short: "Probe every pair of workloads in parallel and print the connectivity matrix",
		Long: `Probe every ordered pair of distinct workloads on every port and protocol, in
parallel, and print one table per protocol/port (row: from, column: to; "ok"
connected, "-" blocked), or with -o json one array of {"from", "to", "port",
"protocol", "connected"}.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			for _, p := range datastore.SplitList(ports) {
				n, err := strconv.Atoi(p)
				if err != nil || n < 1 || n > 65535 {
					return fmt.Errorf("--ports: %q is not a port", p)
				}
				mo.Ports = append(mo.Ports, n)
			}
			for _, p := range datastore.SplitList(protocols) {
				p = strings.ToLower(p)
				if p != "tcp" && p != "udp" {
					return fmt.Errorf("--protocols: %q: want tcp or udp", p)
				}
				mo.Protocols = append(mo.Protocols, p)
			}
			if output != "table" && output != "json" {
				return fmt.Errorf("-o %q: want table or json", output)
			}
			mo.Family = 4
			if ipv6 {
				mo.Family = 6
			}
			if len(l.Workloads()) < 2 {
				return errors.New("a matrix needs at least two workloads (tortie lab workload add)")
			}
			res, err := l.Matrix(cmd.Context(), mo)
			if err != nil {
				return err
			}
			if output == "json" {
				return json.NewEncoder(g.out).Encode(res)
			}
			lab.PrintMatrix(g.out, res)
			return nil
		},
	}
	cmd.Flags().StringVar(&ports, "ports", "80", "ports to probe")
	cmd.Flags().StringVar(&protocols, "protocols", "tcp", "protocols to probe: tcp, udp")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	cmd.Flags().BoolVar(&ipv6, "ipv6", false, "probe the IPv6 addresses")
	cmd.Flags().DurationVar(&mo.Timeout, "timeout", lab.DefaultProbeTimeout, "the first try's timeout; a flow silent on all three tries (the timeout doubling each time) is blocked")
	return cmd
}

func newLabAgentCommand(g *globals, open func() (*lab.Lab, error)) *cobra.Command {
	cmd := &cobra.Command{Use: "agent", Short: "Act on a host's tortie-node"}
	cmd.AddCommand(&cobra.Command{
		Use:   "restart HOST",
		Short: "Restart a host's agent (SIGTERM: a graceful restart) and wait until the lab converges",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			if err := l.RestartAgent(cmd.Context(), args[0]); err != nil {
				return err
			}
			if err := l.WaitConverged(cmd.Context(), 90*time.Second); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "agent of %s restarted; the lab has converged\n", args[0])
			return nil
		},
	})
	return cmd
}

func newLabLinkCommand(g *globals, open func() (*lab.Lab, error)) *cobra.Command {
	return &cobra.Command{
		Use:   "link HOST up|down",
		Short: "Set a host's link to the fabric up or down (a cable pulled and put back)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			state, err := lab.ParseLinkState(args[1])
			if err != nil {
				return err
			}
			return l.SetLink(cmd.Context(), args[0], state)
		},
	}
}

func newLabServeCommand(g *globals) *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:    "serve --listen tcp:80,udp:80",
		Short:  "The workloads' built-in server (run by the lab inside each workload)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The lab stops it with SIGTERM, which cancels cmd.Context().
			return lab.Serve(cmd.Context(), datastore.SplitList(listen), g.out)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", strings.Join(lab.DefaultListen, ","), "tcp:PORT,udp:PORT,...")
	return cmd
}
