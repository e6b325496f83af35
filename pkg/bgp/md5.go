package bgp

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// TCP MD5 failures are invisible to BGP: the kernel drops a segment whose
// signature is wrong or missing before any socket sees it, so the session
// just never comes up. The only trace is in the namespace's TcpExt
// counters, which the speaker reads to explain a session that stays down.
// They count for the whole network namespace, not per peer.
type md5Counters struct {
	NotFound   uint64 // we have a key for the peer, its segment was unsigned
	Unexpected uint64 // the segment was signed, we have no key for the peer
	Failure    uint64 // signed with a key different from ours
}

const netstatPath = "/proc/self/net/netstat"

func readMD5Counters() md5Counters {
	f, err := os.Open(netstatPath)
	if err != nil {
		return md5Counters{}
	}
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "TcpExt:" {
			continue
		}
		if names == nil {
			names = fields
			continue
		}
		var c md5Counters
		for i := 1; i < len(fields) && i < len(names); i++ {
			v, _ := strconv.ParseUint(fields[i], 10, 64)
			switch names[i] {
			case "TCPMD5NotFound":
				c.NotFound = v
			case "TCPMD5Unexpected":
				c.Unexpected = v
			case "TCPMD5Failure":
				c.Failure = v
			}
		}
		return c
	}
	return md5Counters{}
}
