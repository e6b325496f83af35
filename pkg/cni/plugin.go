package cni

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/ipam"
)

// SupportedVersions are the CNI spec versions the plugin speaks, each with
// its own result format (0.3.x and 0.4.0: containernetworking's types/040,
// 1.x: types/100; results are built as 1.1.0 and converted by
// types.Result.GetAsVersion) and its own commands: ADD and DEL in all,
// CHECK from 0.4.0, STATUS and GC from 1.1.0 (skel refuses the others with
// code 1). Calico's plugin also takes 0.1.0 and 0.2.0, whose results have
// no interfaces; Calico's own manifests say 0.3.1.
var SupportedVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// Version of the plugin, shown when it is run without CNI_COMMAND.
var Version = "dev"

// Main runs the plugin in the role its name says (see roleFromName).
func Main() {
	name := filepath.Base(os.Args[0])
	r := roleFromName(name)
	funcs := skel.CNIFuncs{
		Add:    func(a *skel.CmdArgs) error { return run(a, name, r, "ADD") },
		Del:    func(a *skel.CmdArgs) error { return run(a, name, r, "DEL") },
		Check:  func(a *skel.CmdArgs) error { return run(a, name, r, "CHECK") },
		Status: func(a *skel.CmdArgs) error { return run(a, name, r, "STATUS") },
		GC:     func(a *skel.CmdArgs) error { return run(a, name, r, "GC") },
	}
	skel.PluginMainFuncs(funcs, version.PluginSupports(SupportedVersions...),
		fmt.Sprintf("tortie CNI plugin %s (installed as %s and %s, or as %s and %s)", Version, PluginType, IPAMType, CalicoPluginType, CalicoIPAMType))
}

type role int

const (
	roleNone role = iota // a name that says neither
	roleMain
	roleIPAM
)

// roleFromName is the role of the binary called by name (the base name of
// os.Args[0]: a runtime execs the plugin by its "type", so the name is the
// type): tortie and calico are the network plugin, tortie-ipam and
// calico-ipam the IPAM plugin. Calico's names let an operator migrating
// from Calico link tortie-cni in place of Calico's two binaries and keep
// the conflist. Any other name is refused (roleNone): the network config's
// "type" cannot tell, since the IPAM plugin is handed the network plugin's
// config.
func roleFromName(name string) role {
	switch name {
	case PluginType, CalicoPluginType:
		return roleMain
	case IPAMType, CalicoIPAMType:
		return roleIPAM
	}
	return roleNone
}

// nameError is the error of a binary called by a name that says no role.
func nameError(name string) *types.Error {
	return newError(CodeInstallName,
		fmt.Sprintf("tortie-cni was called as %q, a name that says neither of its roles: install it (a link or a copy) as %s or %s for the network plugin and as %s or %s for the IPAM plugin",
			name, PluginType, CalicoPluginType, IPAMType, CalicoIPAMType), nil)
}

// invocation is one run of the plugin.
type invocation struct {
	args     *skel.CmdArgs
	conf     *NetConf
	log      *slog.Logger
	ctx      context.Context
	node     string
	wl       *workload
	handleID string

	ds       datastore.Config
	dsSource string
	be       *datastore.Etcd
	cl       *client.Client
	ipam     *ipam.IPAM

	// The Kubernetes API (kubeMode): the client, the pod's UID and what its
	// annotations ask of IPAM.
	kube   *kubeClient
	podUID string
	podReq *podIPAM
}

// run decodes the config, sets up logging and calls the command. Every
// error it returns is a *types.Error.
func run(args *skel.CmdArgs, name string, r role, cmd string) (retErr error) {
	conf, confErr := parseConf(args.StdinData)
	logger, closeLog := openLog(conf) // conf nil: errors to stderr only
	defer closeLog()
	p := &invocation{args: args, conf: conf}
	p.log = logger.With("cmd", cmd, "containerID", args.ContainerID, "ifname", args.IfName, "as", name)
	start := time.Now()
	defer func() {
		if retErr != nil {
			p.log.Error("failed", "error", retErr, "took", time.Since(start))
		} else {
			p.log.Info("done", "took", time.Since(start))
		}
	}()
	if r == roleNone {
		return nameError(name)
	}
	if confErr != nil {
		return confErr
	}
	p.log = p.log.With("network", conf.Name)
	ctx, cancel := context.WithTimeout(context.Background(), 4*conf.datastoreTimeout()+10*time.Second)
	defer cancel()
	p.ctx = ctx
	defer p.close()
	if r == roleMain {
		// For every command: a DEL that delegated to the network plugin
		// would call itself without end.
		if err := conf.checkIPAMType(); err != nil {
			return err
		}
	}
	refused, skipped := conf.checkCalicoKeys(r, cmd)
	if refused != nil {
		return refused
	}
	for _, rf := range skipped {
		p.log.Warn("a key tortie refuses for ADD is set; it plays no part in "+cmd+", which goes on", "key", rf.key, "why", rf.why)
	}
	if r == roleMain && conf.Policy.Type == PolicyTypeK8s && !conf.kubeConfigured() {
		p.log.Debug("policy.type k8s without a Kubernetes client (kubernetes.kubeconfig): a pod gets its namespace's profile kns.<namespace> and its labels from the runtime")
	}
	if conf.Kubernetes.NodeName != "" {
		p.log.Debug("kubernetes.node_name: not used (Calico's plugin reads it only to look up the node's podCIDR for host-local's usePodCidr, which needs the Kubernetes API)")
	}

	switch cmd {
	case "STATUS":
		return p.status(r)
	case "GC":
		return p.gc(r)
	}
	var err error
	if p.node, err = conf.nodeName(); err != nil {
		return err
	}
	if p.wl, err = identify(conf, args.ContainerID, args.IfName, args.Args); err != nil {
		return err
	}
	p.handleID = HandleID(conf.Name, args.ContainerID)
	p.log = p.log.With("node", p.node, "handle", p.handleID)

	switch {
	case r == roleIPAM && cmd == "ADD":
		return p.ipamAdd()
	case r == roleIPAM && cmd == "DEL":
		return p.ipamDel()
	case r == roleIPAM && cmd == "CHECK":
		return p.ipamCheck()
	case cmd == "ADD":
		return p.add()
	case cmd == "DEL":
		return p.del()
	case cmd == "CHECK":
		return p.check()
	}
	return newError(types.ErrInvalidEnvironmentVariables, "unknown CNI_COMMAND "+cmd, nil)
}

// connect opens the datastore client (lazily: nothing is sent yet).
func (p *invocation) connect() error {
	if p.be != nil {
		return nil
	}
	cfg, source, err := p.conf.datastoreConfig(DefaultConfigFile)
	if err != nil {
		return err
	}
	cfg.Logger = p.log
	p.ds, p.dsSource = cfg, source
	be, err := datastore.New(cfg)
	if err != nil {
		return p.datastoreError("connecting to the datastore", err)
	}
	p.be = be
	p.cl = client.New(be)
	p.ipam = ipam.New(be, ipam.Options{Logger: p.log})
	return nil
}

func (p *invocation) close() {
	if p.be != nil {
		p.be.Close()
	}
}

// usesTortieIPAM says whether addresses come from tortie-ipam in-process
// (the same code the tortie-ipam binary runs, without a second exec and a
// second datastore connection) rather than from a delegated IPAM plugin.
func (p *invocation) usesTortieIPAM() bool {
	switch p.conf.IPAM.Type {
	case IPAMType, CalicoIPAMType, "":
		return true
	}
	return false
}
