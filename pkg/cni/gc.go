package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/ipam"
)

const (
	ipamBlockPrefix = "/calico/ipam/v2/assignment/"
	// ipamTimestampLayout is how Calico (and pkg/ipam) write the
	// allocation's timestamp attribute.
	ipamTimestampLayout = "2006-01-02 15:04:05.999999999 -0700 MST"
)

// storedBlock is the part of an IPAM block GC needs: who holds what.
type storedBlock struct {
	Attributes []struct {
		HandleID  *string           `json:"handle_id"`
		Secondary map[string]string `json:"secondary"`
	} `json:"attributes"`
}

// gc is GC: it removes what belongs to containers of this network on this
// node that are not among the valid attachments. It only ever looks at
// this node's endpoints and allocations (the runtime speaks for its own
// node only), at endpoints marked with this network, at handles named
// "<network>.", and leaves alone anything younger than the grace period
// (an ADD may be in flight).
func (p *invocation) gc(r role) error {
	node, err := p.conf.nodeName()
	if err != nil {
		return err
	}
	p.node = node
	if err := p.connect(); err != nil {
		return err
	}
	validCtr := map[string]bool{}
	validAtt := map[[2]string]bool{}
	for _, a := range p.conf.ValidAttachments {
		validCtr[a.ContainerID] = true
		validAtt[[2]string{a.ContainerID, a.IfName}] = true
	}
	cutoff := time.Now().Add(-p.conf.gcGrace())
	var errs []error

	if r == roleMain {
		rs, _, err := p.cl.List(p.ctx, wepKind, "")
		if err != nil {
			return p.datastoreError("listing workload endpoints", err)
		}
		for _, res := range rs {
			wep := res.(*v3.WorkloadEndpoint)
			if wep.Spec.Node != node || wep.Annotations[AnnotationNetwork] != p.conf.Name ||
				validAtt[[2]string{wep.Spec.ContainerID, wep.Spec.Endpoint}] || wep.CreationTimestamp.After(cutoff) {
				continue
			}
			if err := teardownHost(wep.Spec.InterfaceName); err != nil {
				errs = append(errs, fmt.Errorf("removing %s: %w", wep.Spec.InterfaceName, err))
			}
			rev, _ := parseRevision(wep.ResourceVersion)
			if _, err := p.cl.Delete(p.ctx, wepKind, wep.Namespace, wep.Name, rev); err != nil && !errors.Is(err, datastore.ErrNotFound) {
				errs = append(errs, fmt.Errorf("deleting WorkloadEndpoint %s/%s: %w", wep.Namespace, wep.Name, err))
				continue
			}
			p.log.Info("gc: stale workload endpoint deleted", "name", wep.Name, "namespace", wep.Namespace, "containerID", wep.Spec.ContainerID)
		}
	}

	if r == roleIPAM || p.usesTortieIPAM() {
		stale, err := p.staleHandles(node, validCtr, cutoff)
		if err != nil {
			return err
		}
		for _, h := range stale {
			got, err := p.ipam.ReleaseByHandle(p.ctx, h)
			if err != nil && !errors.Is(err, ipam.ErrHandleNotFound) {
				errs = append(errs, fmt.Errorf("releasing handle %s: %w", h, err))
				continue
			}
			p.log.Info("gc: stale handle released", "handle", h, "addrs", got)
		}
	} else {
		if err := invoke.DelegateGC(p.ctx, p.conf.IPAM.Type, p.args.StdinData, nil); err != nil {
			errs = append(errs, fmt.Errorf("IPAM plugin %s GC: %w", p.conf.IPAM.Type, err))
		}
	}
	if len(errs) > 0 {
		return newError(CodeDatastore, fmt.Sprintf("GC removed what it could but %d operations failed; run GC again", len(errs)), errors.Join(errs...))
	}
	return nil
}

// staleHandles lists the handles "<network>.<containerID>" with
// allocations for this node whose container is not valid and whose every
// allocation is older than cutoff.
func (p *invocation) staleHandles(node string, valid map[string]bool, cutoff time.Time) ([]string, error) {
	kvs, _, err := p.be.List(p.ctx, ipamBlockPrefix)
	if err != nil {
		return nil, p.datastoreError("listing IPAM blocks", err)
	}
	prefix := p.conf.Name + "."
	stale := map[string]bool{}
	young := map[string]bool{}
	for _, kv := range kvs {
		var b storedBlock
		if err := json.Unmarshal(kv.Value, &b); err != nil {
			p.log.Warn("gc: unreadable IPAM block skipped", "key", kv.Key, "error", err)
			continue
		}
		for _, at := range b.Attributes {
			if at.HandleID == nil || !strings.HasPrefix(*at.HandleID, prefix) || at.Secondary["node"] != node {
				continue
			}
			h := *at.HandleID
			if valid[strings.TrimPrefix(h, prefix)] {
				continue
			}
			if ts, err := time.Parse(ipamTimestampLayout, at.Secondary["timestamp"]); err == nil && ts.After(cutoff) {
				young[h] = true
				continue
			}
			stale[h] = true
		}
	}
	var out []string
	for h := range stale {
		if !young[h] {
			out = append(out, h)
		}
	}
	sort.Strings(out)
	return out, nil
}

func parseRevision(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	return strconv.ParseInt(s, 10, 64)
}
