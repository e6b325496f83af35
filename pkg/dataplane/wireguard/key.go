package wireguard

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// DefaultKeyFile is where the agent keeps this host's private key.
const DefaultKeyFile = "/var/lib/tortie/wireguard.key"

// keyFileMode is the only mode a key file is written with; a file that
// others can read is refused (see LoadOrCreateKey).
const keyFileMode = 0o600

// LoadOrCreateKey returns the private key kept in path, generating and
// writing a new one only when the file does not exist. The file holds the
// key in base64 and a newline, as `wg genkey` writes it, so `wg pubkey <
// path` prints the public key. It is written to a temporary file in the same
// directory and renamed into place, so a crash never leaves half a key.
//
// A file that exists but does not hold a key, or that group or others may
// read, is an error naming the file: the key is not replaced, because a
// replaced key cuts every peer off until they take up the new one, and the
// operator should decide that. created says whether the key is new.
func LoadOrCreateKey(path string) (key wgtypes.Key, created bool, err error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		fi, err := os.Stat(path)
		if err != nil {
			return key, false, fmt.Errorf("wireguard key %s: %w", path, err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return key, false, fmt.Errorf("wireguard key %s: mode %04o lets others read the private key; want %04o (chmod 600 %s)",
				path, fi.Mode().Perm(), keyFileMode, path)
		}
		key, err = wgtypes.ParseKey(strings.TrimSpace(string(b)))
		if err != nil {
			return key, false, fmt.Errorf("wireguard key %s: not a base64-encoded 32-byte key; remove the file to have a new key made", path)
		}
		return key, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return key, false, fmt.Errorf("wireguard key %s: %w", path, err)
	}

	key, err = wgtypes.GeneratePrivateKey()
	if err != nil {
		return key, false, fmt.Errorf("wireguard key %s: generating: %w", path, err)
	}
	if err := writeKey(path, key); err != nil {
		return wgtypes.Key{}, false, err
	}
	return key, true, nil
}

func writeKey(path string, key wgtypes.Key) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("wireguard key %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("wireguard key %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename there is nothing to remove
	if err := f.Chmod(keyFileMode); err != nil {
		f.Close()
		return fmt.Errorf("wireguard key %s: %w", path, err)
	}
	if _, err := f.WriteString(key.String() + "\n"); err != nil {
		f.Close()
		return fmt.Errorf("wireguard key %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("wireguard key %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("wireguard key %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("wireguard key %s: %w", path, err)
	}
	return nil
}
