package typha

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/tortie/tortie/pkg/datastore"
)

// ProtocolVersion is the version of the wire protocol below. A server
// refuses a hello of any other version with an error frame naming both, so
// mismatched agents and typhas say what is wrong instead of misreading each
// other.
//
// The protocol, over one TCP connection (mutual TLS unless configured
// without): every frame is a 4-byte big-endian length, then a type byte,
// then length-1 bytes of payload.
//
//	client → server  hello    JSON helloMsg: version, node, the prefixes it wants
//	server → client  welcome  JSON welcomeMsg: version, the server's prefixes, ping interval
//	server → client  event    one change (below), first a snapshot of every
//	                          wanted prefix ended by its in-sync event, then
//	                          every change in the datastore's order
//	server → client  ping     nothing; sent when there was nothing to send for
//	                          the ping interval, so a client notices a dead server
//	server → client  error    JSON errorMsg; the server closes the connection next
//
// An event's payload: a byte of datastore.EventType (bit 7 set when more
// events of the same datastore transaction follow), the uvarint index of
// its prefix in the welcome's list, the varint revision, then the key and
// the value, each a uvarint length and the bytes (a deletion has no value).
const ProtocolVersion = 1

const (
	frameHello   byte = 1
	frameWelcome byte = 2
	frameEvent   byte = 3
	framePing    byte = 4
	frameError   byte = 5
)

// maxFrame bounds what a peer may make the other allocate: far above any
// one etcd value (1.5 MiB by default) and any hello.
const maxFrame = 64 << 20

const moreBit = 0x80

type helloMsg struct {
	Version  int      `json:"version"`
	Node     string   `json:"node"`
	Prefixes []string `json:"prefixes"`
}

type welcomeMsg struct {
	Version int `json:"version"`
	// Server names the typha (its host name), for the agent's logs.
	Server   string   `json:"server"`
	Prefixes []string `json:"prefixes"`
	// PingMillis is how often the server sends something at the least.
	PingMillis int64 `json:"pingMillis"`
}

type errorMsg struct {
	Error string `json:"error"`
}

// appendFrame appends a frame of type typ whose payload fill appends.
func appendFrame(b []byte, typ byte, fill func([]byte) []byte) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0, typ)
	b = fill(b)
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-4))
	return b
}

func jsonFrame(typ byte, v any) []byte {
	js, err := json.Marshal(v)
	if err != nil {
		panic(err) // the messages are plain structs
	}
	return appendFrame(nil, typ, func(b []byte) []byte { return append(b, js...) })
}

// eventFrame encodes one event of the prefix with index prefix.
func eventFrame(prefix int, ev datastore.WatchEvent) []byte {
	return appendFrame(nil, frameEvent, func(b []byte) []byte {
		t := byte(ev.Type)
		if ev.More {
			t |= moreBit
		}
		b = append(b, t)
		b = binary.AppendUvarint(b, uint64(prefix))
		var key, value []byte
		var rev int64
		if ev.KV != nil {
			key, rev = []byte(ev.KV.Key), ev.KV.Revision
			if ev.Type != datastore.EventDeleted {
				value = ev.KV.Value
			}
		}
		b = binary.AppendVarint(b, rev)
		b = binary.AppendUvarint(b, uint64(len(key)))
		b = append(b, key...)
		b = binary.AppendUvarint(b, uint64(len(value)))
		return append(b, value...)
	})
}

// decodeEvent reads an event payload.
func decodeEvent(p []byte) (prefix int, ev datastore.WatchEvent, err error) {
	if len(p) < 1 {
		return 0, ev, errors.New("empty event")
	}
	t := datastore.EventType(p[0] &^ moreBit)
	ev.More = p[0]&moreBit != 0
	switch t {
	case datastore.EventAdded, datastore.EventModified, datastore.EventDeleted, datastore.EventInSync:
	default:
		return 0, ev, fmt.Errorf("event of unknown type %d", p[0]&^moreBit)
	}
	ev.Type = t
	p = p[1:]
	idx, n := binary.Uvarint(p)
	if n <= 0 {
		return 0, ev, errors.New("event: bad prefix index")
	}
	p = p[n:]
	rev, n := binary.Varint(p)
	if n <= 0 {
		return 0, ev, errors.New("event: bad revision")
	}
	p = p[n:]
	key, p, err := bytesField(p, "key")
	if err != nil {
		return 0, ev, err
	}
	value, p, err := bytesField(p, "value")
	if err != nil {
		return 0, ev, err
	}
	if len(p) != 0 {
		return 0, ev, fmt.Errorf("event: %d bytes after the value", len(p))
	}
	if t != datastore.EventInSync {
		if len(key) == 0 {
			return 0, ev, fmt.Errorf("%v event without a key", t)
		}
		ev.KV = &datastore.KV{Key: string(key), Revision: rev}
		if t == datastore.EventDeleted {
			ev.PrevKV = &datastore.KV{Key: ev.KV.Key}
		} else {
			ev.KV.Value = bytes.Clone(value) // value is in the reader's buffer
		}
	}
	return int(idx), ev, nil
}

func bytesField(p []byte, what string) (field, rest []byte, err error) {
	l, n := binary.Uvarint(p)
	if n <= 0 || l > uint64(len(p)-n) {
		return nil, nil, fmt.Errorf("event: bad %s length", what)
	}
	return p[n : n+int(l)], p[n+int(l):], nil
}

// readFrame reads one frame; the payload is valid until the next call with
// the same buf.
func readFrame(r *bufio.Reader, buf []byte) (typ byte, payload, newBuf []byte, err error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, buf, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n < 1 || n > maxFrame {
		return 0, nil, buf, fmt.Errorf("frame of %d bytes (at most %d)", n, maxFrame)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return 0, nil, buf, err
	}
	return buf[0], buf[1:], buf, nil
}
