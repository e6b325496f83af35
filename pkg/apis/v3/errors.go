package v3

import (
	"fmt"
	"strings"
)

// FieldError is one problem with one field. Field is the path from the object's
// root, as kubectl prints it: "spec.ingress[1].destination.ports[0]".
type FieldError struct {
	Field  string
	Detail string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Detail
	}
	return e.Field + ": " + e.Detail
}

// ErrorList is every problem found in one object. Validation reports them all
// at once so an operator fixes a manifest in one pass.
type ErrorList []*FieldError

func (l ErrorList) Error() string {
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

// ToError returns nil for an empty list, so callers can `return errs.ToError()`.
func (l ErrorList) ToError() error {
	if len(l) == 0 {
		return nil
	}
	return l
}

// Path builds field paths: Path("spec").Child("ingress").Index(1).
type Path string

// Child appends a field name.
func (p Path) Child(name string) Path {
	if p == "" {
		return Path(name)
	}
	return Path(string(p) + "." + name)
}

// Index appends a list index.
func (p Path) Index(i int) Path { return Path(fmt.Sprintf("%s[%d]", p, i)) }

// Key appends a map key.
func (p Path) Key(k string) Path { return Path(fmt.Sprintf("%s[%s]", p, k)) }

// Errorf makes an error at this path.
func (p Path) Errorf(format string, args ...any) *FieldError {
	return &FieldError{Field: string(p), Detail: fmt.Sprintf(format, args...)}
}
