package wireguard

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// The userspace device is configured with WireGuard's cross-platform
// configuration protocol ("UAPI": key=value lines, keys in hex), the same
// text wgctrl and `wg` send over a userspace device's socket. tortie hands it
// to the in-process device directly, so that the kernel and the userspace
// device both take a wgtypes.Config and report a wgtypes.Device.

// encodeConfig renders c as a UAPI "set" body.
func encodeConfig(c wgtypes.Config) string {
	var b strings.Builder
	line := func(k, v string) { b.WriteString(k + "=" + v + "\n") }
	if c.PrivateKey != nil {
		line("private_key", hex.EncodeToString(c.PrivateKey[:]))
	}
	if c.ListenPort != nil {
		line("listen_port", strconv.Itoa(*c.ListenPort))
	}
	if c.FirewallMark != nil {
		line("fwmark", strconv.Itoa(*c.FirewallMark))
	}
	if c.ReplacePeers {
		line("replace_peers", "true")
	}
	for _, p := range c.Peers {
		line("public_key", hex.EncodeToString(p.PublicKey[:]))
		if p.Remove {
			line("remove", "true")
			continue
		}
		if p.UpdateOnly {
			line("update_only", "true")
		}
		if p.PresharedKey != nil {
			line("preshared_key", hex.EncodeToString(p.PresharedKey[:]))
		}
		if p.Endpoint != nil {
			line("endpoint", p.Endpoint.String())
		}
		if p.PersistentKeepaliveInterval != nil {
			line("persistent_keepalive_interval", strconv.Itoa(int(p.PersistentKeepaliveInterval.Seconds())))
		}
		if p.ReplaceAllowedIPs {
			line("replace_allowed_ips", "true")
		}
		for _, n := range p.AllowedIPs {
			line("allowed_ip", n.String())
		}
	}
	return b.String()
}

// parseDevice reads a UAPI "get" body into a wgtypes.Device.
func parseDevice(name, body string) (*wgtypes.Device, error) {
	d := &wgtypes.Device{Name: name, Type: wgtypes.Userspace}
	var p *wgtypes.Peer
	var hsSec, hsNsec int64
	flush := func() {
		if p != nil {
			if hsSec != 0 || hsNsec != 0 {
				p.LastHandshakeTime = time.Unix(hsSec, hsNsec)
			}
			d.Peers = append(d.Peers, *p)
		}
		p, hsSec, hsNsec = nil, 0, 0
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			if sc.Text() == "" {
				continue
			}
			return nil, fmt.Errorf("wireguard %s: malformed line %q from the device", name, sc.Text())
		}
		var err error
		switch k {
		case "private_key":
			d.PrivateKey, err = hexKey(v)
			d.PublicKey = d.PrivateKey.PublicKey()
		case "listen_port":
			d.ListenPort, err = strconv.Atoi(v)
		case "fwmark":
			d.FirewallMark, err = strconv.Atoi(v)
		case "public_key":
			flush()
			p = &wgtypes.Peer{}
			p.PublicKey, err = hexKey(v)
		case "errno":
			if v != "0" {
				return nil, fmt.Errorf("wireguard %s: the device answered errno %s", name, v)
			}
		default:
			if p == nil {
				continue // a device field this package does not use
			}
			err = parsePeerField(p, k, v, &hsSec, &hsNsec)
		}
		if err != nil {
			return nil, fmt.Errorf("wireguard %s: %s=%q from the device: %w", name, k, v, err)
		}
	}
	flush()
	return d, sc.Err()
}

func parsePeerField(p *wgtypes.Peer, k, v string, hsSec, hsNsec *int64) error {
	var err error
	switch k {
	case "preshared_key":
		p.PresharedKey, err = hexKey(v)
	case "endpoint":
		p.Endpoint, err = net.ResolveUDPAddr("udp", v)
	case "allowed_ip":
		var n *net.IPNet
		if _, n, err = net.ParseCIDR(v); err == nil {
			p.AllowedIPs = append(p.AllowedIPs, *n)
		}
	case "persistent_keepalive_interval":
		var s int
		s, err = strconv.Atoi(v)
		p.PersistentKeepaliveInterval = time.Duration(s) * time.Second
	case "last_handshake_time_sec":
		*hsSec, err = strconv.ParseInt(v, 10, 64)
	case "last_handshake_time_nsec":
		*hsNsec, err = strconv.ParseInt(v, 10, 64)
	case "rx_bytes":
		p.ReceiveBytes, err = strconv.ParseInt(v, 10, 64)
	case "tx_bytes":
		p.TransmitBytes, err = strconv.ParseInt(v, 10, 64)
	case "protocol_version":
		p.ProtocolVersion, err = strconv.Atoi(v)
	}
	return err
}

func hexKey(s string) (wgtypes.Key, error) {
	var k wgtypes.Key
	b, err := hex.DecodeString(s)
	if err != nil {
		return k, err
	}
	if len(b) != len(k) {
		return k, fmt.Errorf("key of %d bytes, want %d", len(b), len(k))
	}
	copy(k[:], b)
	return k, nil
}
