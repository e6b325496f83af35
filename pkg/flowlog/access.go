package flowlog

import (
	"crypto/subtle"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Allowed reports whether a client may read flow records, which name
// workloads: one on loopback, or one presenting the configured token
// (never when no token is configured).
func Allowed(remoteAddr, presented, token string) bool {
	if host, _, err := net.SplitHostPort(remoteAddr); err == nil {
		if a, err := netip.ParseAddr(host); err == nil && a.Unmap().IsLoopback() {
			return true
		}
	}
	return token != "" && subtle.ConstantTimeCompare([]byte(presented), []byte(token)) == 1
}

// BearerToken is the token of an "Authorization: Bearer" header, or "".
func BearerToken(r *http.Request) string {
	t, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return t
}
