package cni

import (
	"context"
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/ipam"
)

// Plugin-specific error codes (the spec reserves 100 and up for plugins).
// Generic conditions use the spec's own codes: 7 for a bad network config,
// 11 (try again later) for an unreachable datastore, 50 for STATUS.
const (
	// CodeNoAddresses: IPAM has no free address in the pools this node may
	// use, or no pool at all.
	CodeNoAddresses uint = 100
	// CodeInterfaceExists: the container already has an interface of the
	// requested name that tortie did not make.
	CodeInterfaceExists uint = 101
	// CodeDataplane: creating or configuring the veth, addresses, routes or
	// sysctls failed.
	CodeDataplane uint = 102
	// CodeDatastore: the datastore refused a read or write (not merely
	// unreachable: that is code 11).
	CodeDatastore uint = 103
	// CodeCheckFailed: CHECK found the workload's networking is not what
	// ADD set up.
	CodeCheckFailed uint = 104
	// CodeIPAM: IPAM failed for another reason than running out.
	CodeIPAM uint = 105
	// CodeInstallName: the binary was called by a name that says neither
	// of its roles (see roleFromName).
	CodeInstallName uint = 106
	// CodeKubernetes: the Kubernetes API refused a request (credentials,
	// RBAC) or the pod or namespace does not exist. An API server that does
	// not answer is code 11.
	CodeKubernetes uint = 107
	// CodePodAnnotation: an annotation of the pod or its namespace that
	// chooses its addresses is not valid.
	CodePodAnnotation uint = 108
)

func newError(code uint, msg string, err error) *types.Error {
	e := &types.Error{Code: code, Msg: msg}
	if err != nil {
		e.Details = err.Error()
	}
	return e
}

// datastoreError turns a datastore failure into the error an operator can
// act on: unreachable (retry, check etcd) or refused.
func (p *invocation) datastoreError(what string, err error) *types.Error {
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	if errors.Is(err, datastore.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return newError(types.ErrTryAgainLater,
			fmt.Sprintf("%s: the datastore (etcd at %v, from %s) did not answer within %s; check that etcd is running and reachable from this host",
				what, p.ds.Endpoints, p.dsSource, p.conf.datastoreTimeout()), err)
	}
	return newError(CodeDatastore, fmt.Sprintf("%s: the datastore refused the request", what), err)
}

// ipamError classifies an IPAM failure.
func (p *invocation) ipamError(err error) *types.Error {
	switch {
	case errors.Is(err, ipam.ErrNoFreeAddresses), errors.Is(err, ipam.ErrNoPools):
		return newError(CodeNoAddresses,
			fmt.Sprintf("no address for %s on node %s: %v; add or enlarge an IPPool usable by this node, or free addresses (tortie ipam check)", p.handleID, p.node, err), err)
	case errors.Is(err, datastore.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return p.datastoreError("allocating addresses", err)
	}
	return newError(CodeIPAM, fmt.Sprintf("allocating addresses for %s failed", p.handleID), err)
}
