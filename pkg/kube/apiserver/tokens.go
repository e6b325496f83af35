package apiserver

import (
	"crypto/rand"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

const tokensFile = "tokens.csv"

// ensureTokens writes Dir/tokens.csv with the admin and users, keeping the
// token each already had there (so clients keep working across restarts)
// and generating one for each new user without a Token of its own. Users
// in the file but not in users are kept too: their kubeconfigs may be in
// use. It returns every user in the file, admin first.
func ensureTokens(dir string, users []User) ([]User, error) {
	path := filepath.Join(dir, tokensFile)
	old, err := readTokens(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	byName := map[string]int{}
	var out []User
	admin := User{Name: AdminUser, Groups: []string{"system:masters"}}
	for _, u := range append(append([]User{admin}, old...), users...) {
		i, ok := byName[u.Name]
		if !ok {
			byName[u.Name] = len(out)
			out = append(out, u)
			continue
		}
		if u.Token == "" {
			u.Token = out[i].Token
		}
		out[i] = u
	}
	tokens := map[string]string{}
	for i := range out {
		if out[i].Token == "" {
			out[i].Token = newToken()
		}
		if other, dup := tokens[out[i].Token]; dup {
			return nil, fmt.Errorf("users %q and %q have the same token", other, out[i].Name)
		}
		tokens[out[i].Token] = out[i].Name
	}
	var b strings.Builder
	w := csv.NewWriter(&b)
	for _, u := range out {
		// token,user,uid,"group1,group2": the user name doubles as its UID.
		rec := []string{u.Token, u.Name, u.Name}
		if len(u.Groups) > 0 {
			rec = append(rec, strings.Join(u.Groups, ","))
		}
		if err := w.Write(rec); err != nil {
			return nil, err
		}
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return nil, err
	}
	if err := writeFile(path, []byte(b.String()), 0o600); err != nil {
		return nil, err
	}
	return out, nil
}

// readTokens reads a static token file as kube-apiserver does.
func readTokens(path string) ([]User, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var users []User
	for i, rec := range recs {
		if len(rec) < 3 || rec[0] == "" || rec[1] == "" {
			return nil, fmt.Errorf("%s: line %d: want token,user,uid[,groups]", path, i+1)
		}
		u := User{Token: rec[0], Name: rec[1]}
		if len(rec) > 3 && rec[3] != "" {
			u.Groups = strings.Split(rec[3], ",")
		}
		users = append(users, u)
	}
	return users, nil
}

func newToken() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail
	}
	return hex.EncodeToString(b)
}
