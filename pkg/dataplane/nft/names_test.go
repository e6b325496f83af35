package nft

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestComment(t *testing.T) {
	long := strings.Repeat("é", 100)
	cases := []struct{ in, want string }{
		{`app == "web"`, `app == 'web'`},
		{"two\nlines", "two lines"},
		{strings.Repeat("a", 128), strings.Repeat("a", 128)},
		{strings.Repeat("a", 129), strings.Repeat("a", 125) + "..."},
	}
	for _, c := range cases {
		if got := comment(c.in); got != c.want {
			t.Errorf("comment(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	if got := comment(long); len(got) > maxComment || !utf8.ValidString(got) {
		t.Errorf("multi-byte cut: %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
}
