package flagenv

import "testing"

func TestOr(t *testing.T) {
	for _, tc := range []struct {
		name, set, def, want string
		unset                bool
	}{
		{name: "set", set: "10.0.0.5:5473", def: "", want: "10.0.0.5:5473"},
		{name: "unset", unset: true, def: "info", want: "info"},
		{name: "empty counts as unset", set: "", def: "info", want: "info"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const v = "TORTIE_FLAGENV_TEST"
			if !tc.unset {
				t.Setenv(v, tc.set)
			}
			if got := Or(v, tc.def); got != tc.want {
				t.Errorf("Or(%s=%q, %q) = %q, want %q", v, tc.set, tc.def, got, tc.want)
			}
		})
	}
}
