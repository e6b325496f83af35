package cni

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/datastore"
)

var wepKind, _ = v3.KindByKind(v3.KindWorkloadEndpoint)

func (p *invocation) plan(addrs []netip.Addr) *vethPlan {
	return &vethPlan{
		netns:    p.args.Netns,
		contName: p.args.IfName,
		hostName: p.wl.hostVeth(),
		addrs:    addrs,
	}
}

// endpoint is the WorkloadEndpoint of this workload with these addresses.
func (p *invocation) endpoint(hostName string, mac net.HardwareAddr, addrs []netip.Addr) *v3.WorkloadEndpoint {
	w := p.wl
	wep := &v3.WorkloadEndpoint{
		TypeMeta: metav1.TypeMeta{Kind: v3.KindWorkloadEndpoint, APIVersion: "projectcalico.org/v3"},
		ObjectMeta: metav1.ObjectMeta{
			Name:         w.endpointName(p.node),
			Namespace:    w.namespace,
			Labels:       w.labels,
			Annotations:  map[string]string{AnnotationNetwork: p.conf.Name},
			GenerateName: w.generateName,
		},
		Spec: v3.WorkloadEndpointSpec{
			Orchestrator:       w.orchestrator,
			Node:               p.node,
			ContainerID:        w.containerID,
			Endpoint:           w.endpoint,
			InterfaceName:      hostName,
			Profiles:           w.profiles(p.conf),
			Ports:              w.ports,
			ServiceAccountName: w.serviceAccount,
		},
	}
	if w.orchestrator == v3.OrchestratorKubernetes {
		wep.Spec.Pod = w.pod
	} else {
		wep.Spec.Workload = w.containerID
	}
	if mac != nil {
		wep.Spec.MAC = mac.String()
	}
	for _, a := range addrs {
		wep.Spec.IPNetworks = append(wep.Spec.IPNetworks, netip.PrefixFrom(a, a.BitLen()).String())
	}
	return wep
}

// add is ADD of the main plugin. Each stage pushes its undo; a failure runs
// them in reverse, so a failed ADD leaves nothing behind.
func (p *invocation) add() (retErr error) {
	plan := p.plan(nil)
	log := p.log.With("hostVeth", plan.hostName)

	// Cheap checks first, and the Kubernetes API's answers, before anything
	// is allocated.
	mtu, terr := p.conf.workloadMTU()
	if terr != nil {
		return terr
	}
	plan.mtu = mtu
	if p.kubeMode() {
		if err := p.readPod(); err != nil {
			return err
		}
	}
	if err := v3.Validate(p.endpoint(plan.hostName, nil, nil)); err != nil {
		return newError(types.ErrInvalidNetworkConfig, "the workload cannot be named as a WorkloadEndpoint: "+err.Error(), nil)
	}
	reuse, err := plan.precheck()
	if err != nil {
		return err
	}
	if err := p.connect(); err != nil {
		return err
	}

	var undo []func()
	defer func() {
		if retErr == nil {
			return
		}
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}()

	alloc, err := p.allocate()
	if err != nil {
		return err
	}
	undo = append(undo, func() {
		if err := alloc.release(); err != nil {
			log.Error("undo: could not release the addresses; DEL will", "error", err)
			retErr = appendDetail(retErr, fmt.Sprintf("addresses of %s may still be held; a DEL of this container releases them", p.handleID))
		}
	})
	plan.addrs = alloc.addrs

	undo = append(undo, func() {
		if err := teardownHost(plan.hostName); err != nil {
			log.Error("undo: could not remove the veth", "error", err)
		}
	})
	st, err := plan.setup(reuse)
	if err != nil {
		return err
	}
	log.Info("veth ready", "reused", reuse, "addrs", plan.addrs, "mtu", plan.mtu)

	wep := p.endpoint(plan.hostName, st.contMAC, plan.addrs)
	if err := p.writeEndpoint(wep); err != nil {
		return err
	}
	log.Info("workload endpoint written", "name", wep.Name, "namespace", wep.Namespace)
	if p.kubeMode() {
		undo = append(undo, func() {
			if err := p.removeEndpoint(wep); err != nil {
				log.Error("undo: could not delete the workload endpoint; DEL will", "error", err)
				retErr = appendDetail(retErr, fmt.Sprintf("WorkloadEndpoint %s/%s may remain; a DEL of this container deletes it", wep.Namespace, wep.Name))
			}
		})
		if err := p.annotatePod(wep); err != nil {
			return err
		}
	}

	res := &current.Result{CNIVersion: current.ImplementedSpecVersion, Interfaces: plan.resultInterfaces(st), DNS: p.conf.DNS}
	contIdx := 1
	for _, a := range plan.addrs {
		ipc := &current.IPConfig{Interface: &contIdx, Address: *hostPrefix(a)}
		if a.Is4() {
			ipc.Gateway = GatewayIPv4
		} else {
			ipc.Gateway = st.gw6
		}
		res.IPs = append(res.IPs, ipc)
	}
	if plan.has(4) {
		res.Routes = append(res.Routes, &types.Route{Dst: *defaultNet(4), GW: GatewayIPv4})
	}
	if plan.has(6) {
		res.Routes = append(res.Routes, &types.Route{Dst: *defaultNet(6), GW: st.gw6})
	}
	return types.PrintResult(res, p.conf.CNIVersion)
}

// writeEndpoint creates the WorkloadEndpoint or replaces the one of that
// name (a retried ADD, or a pod whose sandbox was recreated).
func (p *invocation) writeEndpoint(wep *v3.WorkloadEndpoint) error {
	for attempt := 0; ; attempt++ {
		_, err := p.cl.Apply(p.ctx, wep)
		if err == nil {
			return nil
		}
		if errors.Is(err, datastore.ErrConflict) && attempt < 5 {
			continue // written meanwhile by someone else: read again
		}
		return p.datastoreError(fmt.Sprintf("writing WorkloadEndpoint %s/%s", wep.Namespace, wep.Name), err)
	}
}

// removeEndpoint deletes the endpoint ADD just wrote, if it is still this
// container's (the undo of a failed ADD).
func (p *invocation) removeEndpoint(wep *v3.WorkloadEndpoint) error {
	r, err := p.cl.Get(p.ctx, wepKind, wep.Namespace, wep.Name)
	switch {
	case errors.Is(err, datastore.ErrNotFound):
		return nil
	case err != nil:
		return err
	}
	if cur := r.(*v3.WorkloadEndpoint); cur.Spec.ContainerID == p.args.ContainerID {
		rev, _ := parseRevision(cur.ResourceVersion)
		if _, err := p.cl.Delete(p.ctx, wepKind, wep.Namespace, wep.Name, rev); err != nil && !errors.Is(err, datastore.ErrNotFound) {
			return err
		}
	}
	return nil
}

// del is DEL of the main plugin: it succeeds when some or all of the
// workload's state is already gone, and never touches another
// container's.
func (p *invocation) del() error {
	hostName := p.wl.hostVeth()
	// Deleting a veth waits for the kernel's RCU grace periods (tens of
	// ms): do it while the endpoint is read and deleted, and release the
	// addresses only once the interface is gone.
	vethGone := make(chan error, 1)
	go func() { vethGone <- teardownContainer(p.args.Netns, p.args.IfName) }()
	waitVeth := func() error {
		if err := <-vethGone; err != nil {
			return dataplaneError(fmt.Sprintf("cannot remove %s from the container's namespace %s", p.args.IfName, p.args.Netns), err)
		}
		return nil
	}
	if err := p.connect(); err != nil {
		waitVeth()
		return err
	}
	if err := p.delEndpoint(hostName); err != nil {
		waitVeth()
		return err
	}
	if err := waitVeth(); err != nil {
		return err
	}
	if !p.usesTortieIPAM() {
		if err := delegatedDel(p.conf.IPAM.Type, p.args.StdinData); err != nil {
			return err
		}
	} else if err := p.releaseHandle(); err != nil {
		return err
	}
	// Last, once the addresses are free: a failure here fails the DEL,
	// which the runtime repeats, and a repeat finds the rest done.
	if p.kubeMode() {
		return p.clearPodAnnotations()
	}
	return nil
}

// delEndpoint deletes the WorkloadEndpoint (and a lingering host veth) if
// this container owns it.
func (p *invocation) delEndpoint(hostName string) error {
	name := p.wl.endpointName(p.node)
	r, err := p.cl.Get(p.ctx, wepKind, p.wl.namespace, name)
	switch {
	case errors.Is(err, datastore.ErrNotFound):
	case err != nil:
		return p.datastoreError(fmt.Sprintf("reading WorkloadEndpoint %s/%s", p.wl.namespace, name), err)
	default:
		wep := r.(*v3.WorkloadEndpoint)
		if wep.Spec.ContainerID != "" && wep.Spec.ContainerID != p.args.ContainerID {
			// The workload was recreated under the same name by another
			// container: that one owns the endpoint and the host veth.
			p.log.Info("workload endpoint belongs to another container; left alone", "name", name, "owner", wep.Spec.ContainerID)
			break
		}
		// The netns may be gone while the host veth lingers (DEL without
		// CNI_NETNS): the endpoint says it is ours.
		if wep.Spec.InterfaceName == hostName {
			if err := teardownHost(hostName); err != nil {
				return dataplaneError("cannot remove host interface "+hostName, err)
			}
		}
		rev, _ := parseRevision(wep.ResourceVersion)
		if _, err := p.cl.Delete(p.ctx, wepKind, p.wl.namespace, name, rev); err != nil && !errors.Is(err, datastore.ErrNotFound) {
			if errors.Is(err, datastore.ErrConflict) {
				return newError(types.ErrTryAgainLater, fmt.Sprintf("WorkloadEndpoint %s/%s changed while being deleted; retry DEL", p.wl.namespace, name), err)
			}
			return p.datastoreError(fmt.Sprintf("deleting WorkloadEndpoint %s/%s", p.wl.namespace, name), err)
		}
		p.log.Info("workload endpoint deleted", "name", name)
	}
	return nil
}

func delegatedDel(plugin string, stdin []byte) error {
	if err := execDel(plugin, stdin); err != nil {
		return delegatedError(plugin, "DEL", err)
	}
	return nil
}

// check is CHECK of the main plugin: interface, addresses, routes, the
// endpoint and the IPAM handle, against the previous result.
func (p *invocation) check() error {
	addrs, err := p.prevAddrs(true)
	if err != nil {
		return err
	}
	plan := p.plan(addrs)
	hostIndex, err := plan.checkHost()
	if err != nil {
		return err
	}
	mac := p.prevMAC()
	if err := ns.WithNetNSPath(p.args.Netns, func(ns.NetNS) error { return plan.checkContainer(hostIndex, mac) }); err != nil {
		var te *types.Error
		if errors.As(err, &te) {
			return te
		}
		return newError(types.ErrInvalidNetNS, "cannot enter the container's network namespace "+p.args.Netns, err)
	}
	if err := p.connect(); err != nil {
		return err
	}
	name := p.wl.endpointName(p.node)
	r, err := p.cl.Get(p.ctx, wepKind, p.wl.namespace, name)
	if errors.Is(err, datastore.ErrNotFound) {
		return checkError("WorkloadEndpoint %s/%s is missing", p.wl.namespace, name)
	}
	if err != nil {
		return p.datastoreError("reading WorkloadEndpoint "+name, err)
	}
	wep := r.(*v3.WorkloadEndpoint)
	want := p.endpoint(plan.hostName, nil, addrs)
	switch {
	case wep.Spec.ContainerID != p.args.ContainerID:
		return checkError("WorkloadEndpoint %s/%s belongs to container %s", p.wl.namespace, name, wep.Spec.ContainerID)
	case wep.Spec.InterfaceName != plan.hostName:
		return checkError("WorkloadEndpoint %s/%s names interface %s, not %s", p.wl.namespace, name, wep.Spec.InterfaceName, plan.hostName)
	case !sameSet(wep.Spec.IPNetworks, want.Spec.IPNetworks):
		return checkError("WorkloadEndpoint %s/%s has ipNetworks %v, the workload has %v", p.wl.namespace, name, wep.Spec.IPNetworks, want.Spec.IPNetworks)
	case mac != "" && !strings.EqualFold(wep.Spec.MAC, mac):
		return checkError("WorkloadEndpoint %s/%s has MAC %s, the workload %s", p.wl.namespace, name, wep.Spec.MAC, mac)
	}
	if !p.usesTortieIPAM() {
		if err := execCheck(p.conf.IPAM.Type, p.args.StdinData); err != nil {
			return delegatedError(p.conf.IPAM.Type, "CHECK", err)
		}
		return nil
	}
	return p.checkHandle(addrs)
}

// status is STATUS: is the datastore reachable (and the delegated IPAM
// plugin ready)?
func (p *invocation) status(r role) error {
	if err := p.connect(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(p.ctx, p.conf.datastoreTimeout())
	defer cancel()
	if _, err := p.be.Get(ctx, "/calico/ipam/v2/config"); err != nil && !errors.Is(err, datastore.ErrNotFound) {
		return newError(types.ErrPluginNotAvailable,
			fmt.Sprintf("the datastore (etcd at %v, from %s) is not reachable: no workload can be added until it is", p.ds.Endpoints, p.dsSource), err)
	}
	if r == roleMain && p.conf.kubeConfigured() && p.conf.Policy.Type == PolicyTypeK8s {
		if err := p.connectKube(); err != nil {
			return err
		}
		if err := p.kube.version(ctx); err != nil {
			te := p.kubeError("asking the Kubernetes API server its version", err)
			return newError(types.ErrPluginNotAvailable, te.Msg, errors.New(te.Details))
		}
	}
	if r == roleMain && !p.usesTortieIPAM() {
		if err := execStatus(p.conf.IPAM.Type, p.args.StdinData); err != nil {
			return delegatedError(p.conf.IPAM.Type, "STATUS", err)
		}
	}
	return nil
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// appendDetail adds a note to a CNI error's details.
func appendDetail(err error, note string) error {
	var te *types.Error
	if errors.As(err, &te) {
		if te.Details != "" {
			te.Details += "; "
		}
		te.Details += note
		return te
	}
	return err
}
