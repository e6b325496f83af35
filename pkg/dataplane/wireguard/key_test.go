package wireguard

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func TestLoadOrCreateKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "wireguard.key")

	k1, created, err := LoadOrCreateKey(path)
	if err != nil || !created {
		t.Fatalf("first call: created %v, err %v", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %04o, want 0600", fi.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	if string(b) != k1.String()+"\n" {
		t.Errorf("file holds %q, want the key in base64 and a newline", b)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the key file", len(entries))
	}

	k2, created, err := LoadOrCreateKey(path)
	if err != nil || created || k2 != k1 {
		t.Fatalf("second call: created %v, err %v, same key %v", created, err, k2 == k1)
	}

	// Lost: a new key.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	k3, created, err := LoadOrCreateKey(path)
	if err != nil || !created || k3 == k1 {
		t.Fatalf("after removal: created %v, err %v, new key %v", created, err, k3 != k1)
	}
}

func TestLoadOrCreateKeyRefuses(t *testing.T) {
	good, _ := wgtypes.GeneratePrivateKey()
	for _, tc := range []struct {
		name    string
		content string
		mode    os.FileMode
		want    string
	}{
		{"not base64", "hello\n", 0o600, "not a base64-encoded 32-byte key"},
		{"too short", "aGVsbG8=\n", 0o600, "not a base64-encoded 32-byte key"},
		{"empty", "", 0o600, "not a base64-encoded 32-byte key"},
		{"readable by others", good.String() + "\n", 0o644, "lets others read the private key"},
		{"readable by the group", good.String() + "\n", 0o640, "chmod 600"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "wireguard.key")
			if err := os.WriteFile(path, []byte(tc.content), tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil { // past the umask
				t.Fatal(err)
			}
			_, created, err := LoadOrCreateKey(path)
			if err == nil || created {
				t.Fatalf("created %v, err %v; want an error", created, err)
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name the file and say %q", err, tc.want)
			}
			if b, _ := os.ReadFile(path); string(b) != tc.content {
				t.Errorf("the file was changed to %q", b)
			}
		})
	}
}
