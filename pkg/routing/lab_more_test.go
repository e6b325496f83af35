package routing

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
)

// TestLabMD5: the mesh password from a secret file; the same password on
// both ends brings the session up, a wrong one keeps it down and the
// status says why.
func TestLabMD5(t *testing.T) {
	l, hs := meshLab(t, 2)
	good, bad := filepath.Join(l.dir, "good"), filepath.Join(l.dir, "bad")
	for dir, pw := range map[string]string{good: "calico-s3cret\n", bad: "wrong\n"} {
		if err := os.MkdirAll(filepath.Join(dir, "bgp-secrets"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "bgp-secrets", "mesh"), []byte(pw), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	k, _ := v3.KindByKind(v3.KindBGPConfiguration)
	bc := k.NewObject().(*v3.BGPConfiguration)
	bc.Name = "default"
	bc.Spec.NodeMeshPassword = &v3.BGPPassword{SecretKeyRef: &v3.SecretKeySelector{Name: "bgp-secrets", Key: "mesh"}}
	l.create(bc)
	hs[0].secrets, hs[1].secrets = good, good
	for _, h := range hs {
		l.start(h)
	}
	eventually(t, 40*time.Second, "sessions with the password Established", func() (bool, string) { return establishedAll(hs, meshWant(hs)) })
	eventually(t, 20*time.Second, "routes", func() (bool, string) { return l.routedAll(hs) })
	allPairs(t, hs)

	hs[1].agent.kill()
	hs[1].secrets = bad
	l.start(hs[1])
	var info string
	eventually(t, 60*time.Second, "h1 says TCP MD5", func() (bool, string) {
		st := hs[0].agent.status()
		if len(st.Peers) != 1 {
			return false, "no peer"
		}
		p := st.Peers[0]
		info = p.State + " " + p.Info
		return p.State != "Established" && strings.Contains(p.Info, "TCP MD5"), info
	})
	t.Logf("h1's view of h2 with a wrong password: %s", info)
}

// TestLabMesh10 times a ten-host full mesh from agent start to every
// session Established and every route programmed.
func TestLabMesh10(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	l, hs := meshLab(t, 10)
	t0 := time.Now()
	for _, h := range hs {
		l.start(h)
	}
	tEst := eventually(t, 60*time.Second, "all sessions Established", func() (bool, string) { return establishedAll(hs, meshWant(hs)) })
	eventually(t, 30*time.Second, "all routes programmed", func() (bool, string) { return l.routedAll(hs) })
	t.Logf("timing: 10 hosts: agents started → all 90 sessions Established %v, → all routes programmed %v",
		tEst.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	allPairs(t, hs[:3])
}
