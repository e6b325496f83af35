package selector

import (
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"sync"
)

// Selector is a parsed, immutable selector expression. It is safe for
// concurrent use.
type Selector interface {
	// Evaluate reports whether labels match. It never allocates and never
	// modifies labels.
	Evaluate(labels map[string]string) bool
	// String returns the canonical form, which re-parses to an equivalent
	// selector with the same canonical form.
	String() string
	// UniqueID is "s:" + base64url-no-padding(SHA-224("s:" + String())), the
	// same ID Calico derives, so names built from it stay compatible.
	UniqueID() string
}

type compiled struct {
	root node

	// The canonical string and ID are computed on first use: most parsed
	// selectors (validation, matching) never need the hash.
	strOnce sync.Once
	str     string
	idOnce  sync.Once
	id      string
}

func (s *compiled) Evaluate(labels map[string]string) bool { return s.root.eval(labels) }

func (s *compiled) String() string {
	s.strOnce.Do(func() {
		var b strings.Builder
		s.root.write(&b)
		s.str = b.String()
	})
	return s.str
}

func (s *compiled) UniqueID() string {
	s.idOnce.Do(func() {
		s.id = uniqueID(s.String())
	})
	return s.id
}

func uniqueID(canonical string) string {
	sum := sha256.Sum224([]byte("s:" + canonical))
	return "s:" + base64.RawURLEncoding.EncodeToString(sum[:])
}

// Parse compiles expr. An empty or whitespace-only expr selects everything,
// as in Calico. Errors are always *ParseError.
func Parse(expr string) (Selector, error) {
	root, err := parse(expr)
	if err != nil {
		return nil, err
	}
	return &compiled{root: root}, nil
}

// MustParse is Parse for selectors known at compile time; it panics on error.
func MustParse(expr string) Selector {
	s, err := Parse(expr)
	if err != nil {
		panic(err)
	}
	return s
}

// Validate reports whether expr is a valid selector, with the same error Parse
// would return.
func Validate(expr string) error {
	_, err := parse(expr)
	return err
}
