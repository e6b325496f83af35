package cni

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/tortie/tortie/pkg/apis/k8s"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/ipam"
)

// allocation is what IPAM handed out, and how to give it back.
type allocation struct {
	addrs   []netip.Addr
	release func() error
}

// The delegated IPAM plugin, called as containernetworking/plugins'
// pkg/ipam calls it. That package is not linked: with it come iptables,
// nftables (sigs.k8s.io/knftables) and ethtool code, and their package
// inits, that every CNI call would pay for and none uses.
func execAdd(plugin string, stdin []byte) (types.Result, error) {
	return invoke.DelegateAdd(context.TODO(), plugin, stdin, nil)
}

func execDel(plugin string, stdin []byte) error {
	return invoke.DelegateDel(context.TODO(), plugin, stdin, nil)
}

func execCheck(plugin string, stdin []byte) error {
	return invoke.DelegateCheck(context.TODO(), plugin, stdin, nil)
}

func execStatus(plugin string, stdin []byte) error {
	return invoke.DelegateStatus(context.TODO(), plugin, stdin, nil)
}

// allocate gets the workload's addresses: from tortie-ipam in-process, or
// from the delegated IPAM plugin.
func (p *invocation) allocate() (*allocation, error) {
	if !p.usesTortieIPAM() {
		r, err := execAdd(p.conf.IPAM.Type, p.args.StdinData)
		if err != nil {
			return nil, delegatedError(p.conf.IPAM.Type, "ADD", err)
		}
		release := func() error { return execDel(p.conf.IPAM.Type, p.args.StdinData) }
		res, err := current.NewResultFromResult(r)
		if err != nil {
			_ = release()
			return nil, newError(types.ErrDecodingFailure, fmt.Sprintf("IPAM plugin %s returned a result tortie cannot read", p.conf.IPAM.Type), err)
		}
		a := &allocation{release: release}
		for _, ipc := range res.IPs {
			addr, ok := netip.AddrFromSlice(ipc.Address.IP)
			if !ok {
				continue
			}
			a.addrs = append(a.addrs, addr.Unmap())
		}
		if len(a.addrs) == 0 {
			_ = release()
			return nil, newError(CodeNoAddresses, fmt.Sprintf("IPAM plugin %s returned no address", p.conf.IPAM.Type), nil)
		}
		return a, nil
	}
	if p.podReq != nil && len(p.podReq.addrs) > 0 {
		what := fmt.Sprintf("Pod %s/%s: annotation %s", p.wl.namespace, p.wl.pod, k8s.AnnotationIPAddrs)
		if err := p.assignExact(p.podReq.addrs, what, CodePodAnnotation); err != nil {
			return nil, err
		}
		return &allocation{addrs: p.podReq.addrs, release: p.releaseHandle}, nil
	}
	req, err := p.wl.requested()
	if err != nil {
		return nil, err
	}
	if len(req) > 0 {
		if err := p.assignExact(req, "CNI_ARGS "+argIP, types.ErrInvalidEnvironmentVariables); err != nil {
			return nil, err
		}
		return &allocation{addrs: req, release: p.releaseHandle}, nil
	}
	as, err := p.autoAssign()
	if err != nil {
		return nil, err
	}
	a := &allocation{release: p.releaseHandle}
	for _, pr := range slices.Concat(as.IPv4, as.IPv6) {
		a.addrs = append(a.addrs, pr.Addr())
	}
	return a, nil
}

// autoAssign asks tortie-ipam for the handle's addresses; a failure gives
// back whatever it did get.
func (p *invocation) autoAssign() (*ipam.Assignment, error) {
	if err := p.connect(); err != nil {
		return nil, err
	}
	num4, num6 := p.conf.assignFamilies()
	if p.podReq != nil && p.podReq.families != nil {
		num4, num6 = p.podReq.families[0], p.podReq.families[1]
		if num4+num6 == 0 {
			return nil, newError(CodePodAnnotation, "annotation "+annotationIPFamilies+" of the pod or its namespace names neither IPv4 nor IPv6", nil)
		}
	}
	if num4+num6 == 0 {
		return nil, newError(types.ErrInvalidNetworkConfig, "ipam assigns neither IPv4 nor IPv6 (assign_ipv4 and assign_ipv6 are both false)", nil)
	}
	args := ipam.AutoAssignArgs{
		HandleID: p.handleID,
		Attrs:    p.wl.ipamAttrs(p.node),
		Num4:     num4,
		Num6:     num6,
		Node:     p.node,
	}
	var err error
	if args.IPv4Pools, args.IPv6Pools, err = p.resolvePools(); err != nil {
		return nil, err
	}
	as, err := p.ipam.AutoAssign(p.ctx, args)
	if err != nil {
		if rerr := p.releaseHandle(); rerr != nil {
			p.log.Warn("could not give back a partial allocation; DEL will", "error", rerr)
		}
		return nil, p.ipamError(err)
	}
	if len(as.IPv4) < num4 || len(as.IPv6) < num6 {
		_ = p.releaseHandle()
		return nil, newError(CodeNoAddresses, fmt.Sprintf("IPAM gave %d IPv4 and %d IPv6 addresses, %d and %d were asked for", len(as.IPv4), len(as.IPv6), num4, num6), nil)
	}
	p.log.Info("addresses assigned", "ipv4", as.IPv4, "ipv6", as.IPv6)
	return as, nil
}

// assignExact gives the handle exactly these addresses (the pod's
// cni.projectcalico.org/ipAddrs, or CNI_ARGS IP), as Calico's IPAM does for
// the address it is asked for: each must be in an enabled IPPool and free,
// or already this handle's (a repeated ADD). A failure gives back what was
// assigned; errors name the request (what) and an address outside every
// pool is badCode.
// Unlike Calico's plugin, an address still held by an earlier sandbox of
// the same pod is not taken from it: the ADD fails with code 11 until that
// sandbox's DEL has freed it.
func (p *invocation) assignExact(addrs []netip.Addr, what string, badCode uint) error {
	if err := p.connect(); err != nil {
		return err
	}
	for _, a := range addrs {
		err := p.ipam.AssignIP(p.ctx, ipam.AssignIPArgs{IP: a, HandleID: p.handleID, Attrs: p.wl.ipamAttrs(p.node), Node: p.node})
		if err == nil {
			continue
		}
		if rerr := p.releaseHandle(); rerr != nil {
			p.log.Warn("could not give back a partial allocation; DEL will", "error", rerr)
		}
		what := fmt.Sprintf("%s: address %s", what, a)
		switch {
		case errors.Is(err, ipam.ErrNotInPool):
			return newError(badCode, what+" is in no enabled IPPool", err)
		case errors.Is(err, ipam.ErrAlreadyAssigned):
			return newError(types.ErrTryAgainLater, what+" is held by another workload (until its DEL frees it)", err)
		case errors.Is(err, datastore.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
			return p.datastoreError("assigning "+a.String(), err)
		}
		return newError(CodeIPAM, what+" cannot be assigned", err)
	}
	p.log.Info("addresses assigned as asked", "addrs", addrs, "by", what)
	return nil
}

// releaseHandle frees the addresses of this container's handle (and only
// those: the handle ID embeds the container ID). A missing handle is fine.
func (p *invocation) releaseHandle() error {
	if err := p.connect(); err != nil {
		return err
	}
	got, err := p.ipam.ReleaseByHandle(p.ctx, p.handleID)
	if err != nil && !errors.Is(err, ipam.ErrHandleNotFound) {
		return p.datastoreError("releasing the addresses of "+p.handleID, err)
	}
	if len(got) > 0 {
		p.log.Info("addresses released", "addrs", got)
	}
	return nil
}

func delegatedError(plugin, cmd string, err error) *types.Error {
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	return newError(CodeIPAM, fmt.Sprintf("IPAM plugin %s failed %s", plugin, cmd), err)
}

// ipamAdd is ADD of tortie-ipam as a plain IPAM plugin: addresses with
// their block's prefix length, as Calico's IPAM plugin returns them.
func (p *invocation) ipamAdd() error {
	if p.wl.ipArg != "" {
		return newError(types.ErrInvalidEnvironmentVariables, "CNI_ARGS IP is honoured by the tortie plugin with its own IPAM, not by tortie-ipam delegated to; use type tortie (or calico) with ipam tortie-ipam", nil)
	}
	as, err := p.autoAssign()
	if err != nil {
		return err
	}
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	for _, pr := range slices.Concat(as.IPv4, as.IPv6) {
		res.IPs = append(res.IPs, &current.IPConfig{Address: net.IPNet{IP: net.IP(pr.Addr().AsSlice()), Mask: net.CIDRMask(pr.Bits(), pr.Addr().BitLen())}})
	}
	return types.PrintResult(res, p.conf.CNIVersion)
}

func (p *invocation) ipamDel() error {
	return p.releaseHandle()
}

// ipamCheck verifies that the handle still holds the addresses of the
// previous result.
func (p *invocation) ipamCheck() error {
	want, err := p.prevAddrs(false)
	if err != nil {
		return err
	}
	return p.checkHandle(want)
}

func (p *invocation) checkHandle(want []netip.Addr) error {
	if err := p.connect(); err != nil {
		return err
	}
	have, err := p.ipam.IPsByHandle(p.ctx, p.handleID)
	if errors.Is(err, ipam.ErrHandleNotFound) {
		return checkError("IPAM handle %s does not exist: the addresses were released", p.handleID)
	}
	if err != nil {
		return p.datastoreError("reading IPAM handle "+p.handleID, err)
	}
	for _, a := range want {
		if !slices.Contains(have, a) {
			return checkError("address %s is no longer held by IPAM handle %s (it holds %v)", a, p.handleID, have)
		}
	}
	return nil
}

// prevAddrs are the addresses of the previous result (CHECK); with
// containerOnly, only those on the container's interface.
func (p *invocation) prevAddrs(containerOnly bool) ([]netip.Addr, error) {
	if p.conf.RawPrevResult == nil {
		return nil, newError(types.ErrInvalidNetworkConfig, "CHECK needs the previous result (prevResult) in the network config", nil)
	}
	if err := version.ParsePrevResult(&p.conf.PluginConf); err != nil {
		return nil, newError(types.ErrDecodingFailure, "cannot read prevResult", err)
	}
	res, err := current.NewResultFromResult(p.conf.PrevResult)
	if err != nil {
		return nil, newError(types.ErrDecodingFailure, "cannot convert prevResult", err)
	}
	var out []netip.Addr
	for _, ipc := range res.IPs {
		if containerOnly && ipc.Interface != nil {
			i := *ipc.Interface
			if i < 0 || i >= len(res.Interfaces) || res.Interfaces[i].Sandbox == "" {
				continue
			}
		}
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok {
			out = append(out, a.Unmap())
		}
	}
	return out, nil
}

// prevMAC is the container interface's MAC in the previous result.
func (p *invocation) prevMAC() string {
	res, err := current.NewResultFromResult(p.conf.PrevResult)
	if err != nil {
		return ""
	}
	for _, i := range res.Interfaces {
		if i.Sandbox != "" && i.Name == p.args.IfName {
			return i.Mac
		}
	}
	return ""
}
