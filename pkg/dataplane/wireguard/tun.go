package wireguard

import "golang.zx2c4.com/wireguard/tun"

// nsTUN is the TUN interface as the userspace device sees it. WireGuard's
// userspace implementation follows the interface's state on a goroutine of
// its own: it brings the device up when the interface comes up, which opens
// the device's UDP sockets, and reads the interface's MTU by name. That
// goroutine runs in whatever network namespace its thread has, the process's
// own, not necessarily the device's (Config.NetnsPath): the sockets would
// open there, and the MTU is not found. So here the device is brought up
// once, by Ensure, in the device's namespace, and stays up while this
// process runs it; only MTU changes are passed on, and read in the device's
// namespace.
type nsTUN struct {
	tun.Device
	inNS   func(func() error) error
	events chan tun.Event
}

func newNSTUN(t tun.Device, inNS func(func() error) error) *nsTUN {
	w := &nsTUN{Device: t, inNS: inNS, events: make(chan tun.Event, 5)}
	go func() {
		defer close(w.events)
		for e := range t.Events() { // closed when t is
			if e&tun.EventMTUUpdate != 0 {
				w.events <- tun.EventMTUUpdate
			}
		}
	}()
	return w
}

func (w *nsTUN) Events() <-chan tun.Event { return w.events }

func (w *nsTUN) MTU() (int, error) {
	var mtu int
	err := w.inNS(func() error {
		var err error
		mtu, err = w.Device.MTU()
		return err
	})
	return mtu, err
}
