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

// Main runs the plugin: the role is chosen by the name the binary was
// called by, else by the network config's "type".
func Main() {
	role := roleFromName(filepath.Base(os.Args[0]))
	funcs := skel.CNIFuncs{
		Add:    func(a *skel.CmdArgs) error { return run(a, role, "ADD") },
		Del:    func(a *skel.CmdArgs) error { return run(a, role, "DEL") },
		Check:  func(a *skel.CmdArgs) error { return run(a, role, "CHECK") },
		Status: func(a *skel.CmdArgs) error { return run(a, role, "STATUS") },
		GC:     func(a *skel.CmdArgs) error { return run(a, role, "GC") },
	}
	skel.PluginMainFuncs(funcs, version.PluginSupports(SupportedVersions...),
		fmt.Sprintf("tortie CNI plugin %s (installed as %s and %s)", Version, PluginType, IPAMType))
}

type role int

const (
	roleByType role = iota // the name says nothing: look at "type"
	roleMain
	roleIPAM
)

func roleFromName(name string) role {
	switch name {
	case PluginType:
		return roleMain
	case IPAMType:
		return roleIPAM
	}
	return roleByType
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
}

// run decodes the config, sets up logging and calls the command. Every
// error it returns is a *types.Error.
func run(args *skel.CmdArgs, r role, cmd string) (retErr error) {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	logger, closeLog := openLog(conf)
	defer closeLog()
	if r == roleByType {
		r = roleMain
		if conf.Type == IPAMType {
			r = roleIPAM
		}
	}
	p := &invocation{args: args, conf: conf}
	p.log = logger.With("cmd", cmd, "network", conf.Name, "containerID", args.ContainerID, "ifname", args.IfName)
	if r == roleIPAM {
		p.log = p.log.With("role", IPAMType)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*conf.datastoreTimeout()+10*time.Second)
	defer cancel()
	p.ctx = ctx
	defer p.close()

	start := time.Now()
	defer func() {
		if retErr != nil {
			p.log.Error("failed", "error", retErr, "took", time.Since(start))
		} else {
			p.log.Info("done", "took", time.Since(start))
		}
	}()

	switch cmd {
	case "STATUS":
		return p.status(r)
	case "GC":
		return p.gc(r)
	}
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
	return p.conf.IPAM.Type == IPAMType || p.conf.IPAM.Type == ""
}
