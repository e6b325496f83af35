package version

import (
	"runtime/debug"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	const rev = "fbdfc99283cdbcb91550e2f2ca1888eea30d79fe"
	for _, tt := range []struct {
		name     string
		settings []debug.BuildSetting
		want     string
	}{
		{"clean checkout", []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: "false"}}, rev},
		{"uncommitted changes", []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: "true"}}, rev + "-dirty"},
		{"no VCS stamp", []debug.BuildSetting{{Key: "-buildvcs", Value: "false"}}, "unknown"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			i := FromBuildInfo(&debug.BuildInfo{GoVersion: "go1.26", Settings: tt.settings})
			if got := i.CommitString(); got != tt.want {
				t.Errorf("commit %q, want %q", got, tt.want)
			}
			if i.Version != Version || i.GoVersion != "go1.26" {
				t.Errorf("%+v", i)
			}
			if s := i.String(); s != Version+" (commit "+tt.want+")" {
				t.Errorf("String() = %q", s)
			}
		})
	}
	if i := FromBuildInfo(nil); i.CommitString() != "unknown" || i.Version != Version {
		t.Errorf("no build info: %+v", i)
	}
}
