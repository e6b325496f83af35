package routing

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/tortie/tortie/pkg/dataplane/wireguard"
	"github.com/tortie/tortie/pkg/nodestatus"
)

// applyWireguard brings the WireGuard device, its peers, its routing table
// and the rule into that table to what the datastore says. With full, the
// device's settings and the rule are compared with the kernel even if they
// did not change here.
func (c *Component) applyWireguard(s *Snapshot, node string, mtu int, full bool) error {
	w, h := c.cfg.Wireguard, c.h
	ws := DesiredWireguard(s, node, WireguardOptions{Device: w.Device, Port: w.Port, Keepalive: w.Keepalive})
	dc := wireguard.Config{Name: w.Device, ListenPort: w.Port, FirewallMark: w.Mark, MTU: mtu,
		PrivateKey: w.PrivateKey, Addr: ws.Addr, Mode: w.Mode, Logger: c.log}

	c.mu.Lock()
	dev := c.wg
	c.mu.Unlock()
	var errs []error
	switch {
	case dev == nil:
		d, err := wireguard.Ensure(h, dc)
		if err != nil {
			c.setWireguardStatus(ws, err)
			return err
		}
		dev, c.wgCfg = d, dc
		c.mu.Lock()
		c.wg = d
		c.mu.Unlock()
	case full || dc != c.wgCfg:
		if err := dev.Update(dc); err != nil {
			errs = append(errs, err)
		} else {
			c.wgCfg = dc
		}
	}
	if _, err := dev.SetPeers(ws.Peers); err != nil {
		errs = append(errs, err)
	}
	if full || !c.wgRule {
		_, err := wireguard.EnsureRule(h, wireguard.Rule{Priority: w.RulePriority, Table: w.Table, Mark: w.Mark}, netlink.FAMILY_V4, c.log)
		c.wgRule = err == nil
		if err != nil {
			errs = append(errs, err)
		}
	}
	c.wgRec.Set(ws.Routes)
	if _, err := c.wgRec.Apply(); err != nil {
		errs = append(errs, fmt.Errorf("wireguard routing table %d: %w", w.Table, err))
	}
	err := errors.Join(errs...)
	c.setWireguardStatus(ws, err)
	return err
}

// setWireguardStatus records what Status reports of WireGuard besides the
// device's own state, which Status reads from the device.
func (c *Component) setWireguardStatus(ws WireguardSet, err error) {
	nodes := make(map[wgtypes.Key]string, len(ws.Peers))
	for i, p := range ws.Peers {
		nodes[p.PublicKey] = ws.PeerNodes[i]
	}
	st := &nodestatus.WireguardStatus{Device: c.cfg.Wireguard.Device, Unencrypted: ws.Unencrypted, MTU: c.wgCfg.MTU}
	if ws.Addr.IsValid() {
		st.Addr = ws.Addr.String()
	}
	if err != nil {
		st.Error = err.Error()
	}
	c.mu.Lock()
	c.wgNodes = nodes
	c.status.Wireguard = st
	c.mu.Unlock()
}

// wireguardStatus completes st (a copy) with the device's state.
func wireguardStatus(st nodestatus.WireguardStatus, dev *wireguard.Device, nodes map[wgtypes.Key]string) *nodestatus.WireguardStatus {
	st.Peers = []nodestatus.WireguardPeer{}
	st.Unencrypted = slices.Clone(st.Unencrypted)
	if dev == nil {
		return &st
	}
	d, err := dev.Status()
	if err != nil {
		st.Error = err.Error()
		return &st
	}
	st.Kind, st.PublicKey, st.ListenPort = d.Type.String(), d.PublicKey.String(), d.ListenPort
	for _, p := range d.Peers {
		wp := nodestatus.WireguardPeer{Node: nodes[p.PublicKey], PublicKey: p.PublicKey.String(), AllowedIPs: []string{},
			LatestHandshake: p.LastHandshakeTime, ReceivedBytes: p.ReceiveBytes, SentBytes: p.TransmitBytes}
		if p.Endpoint != nil {
			wp.Endpoint = p.Endpoint.String()
		}
		for _, a := range p.AllowedIPs {
			wp.AllowedIPs = append(wp.AllowedIPs, wireguard.IPNetPrefix(a).String())
		}
		st.Peers = append(st.Peers, wp)
	}
	slices.SortFunc(st.Peers, func(a, b nodestatus.WireguardPeer) int {
		return cmp.Or(cmp.Compare(a.Node, b.Node), cmp.Compare(a.PublicKey, b.PublicKey))
	})
	return &st
}

// removeWireguard takes away what an earlier run with WireGuard on left:
// the rule, the routes of ours in the WireGuard table, and the device.
func (c *Component) removeWireguard() error {
	w := c.cfg.Wireguard
	var errs []error
	if n, err := wireguard.RemoveRules(c.h, w.Table, w.Mark, netlink.FAMILY_V4, c.log); err != nil {
		errs = append(errs, err)
	} else if n > 0 {
		c.log.Info("WireGuard is off: its routing rule was removed")
	}
	c.wgRec.Set(nil)
	if st, err := c.wgRec.Apply(); err != nil {
		errs = append(errs, fmt.Errorf("wireguard routing table %d: %w", w.Table, err))
	} else if st.Deleted > 0 {
		c.log.Info("WireGuard is off: its routes were removed", "routes", st.Deleted, "table", w.Table)
	}
	if err := wireguard.Remove(c.h, w.Device, c.log); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
