// Package version is what every tortie binary says about itself: its
// release and the commit it was built from. The commit comes from the
// build information the go command embeds (vcs.revision, vcs.modified), so
// a plain `go build` in a checkout stamps it and no -ldflags are needed;
// the Makefile builds with -buildvcs=auto so that a GOFLAGS of
// -buildvcs=false does not turn it off. Standard library only: the CNI
// plugin links it.
package version

import (
	"runtime/debug"
	"sync"
)

// Version is the release. A release build may set it with
// -ldflags "-X github.com/tortie/tortie/pkg/version.Version=v1.2.3".
var Version = "v0.1.0-dev"

// Info is one binary's build.
type Info struct {
	Version string
	// Commit is the full revision the binary was built from; empty when the
	// build carries no VCS information (built outside a checkout, or with
	// -buildvcs=false).
	Commit string
	// Modified says the checkout had uncommitted changes.
	Modified bool
	// CommitTime is the commit's time, RFC 3339, as git recorded it.
	CommitTime string
	// GoVersion is the toolchain that built the binary.
	GoVersion string
}

var get = sync.OnceValue(func() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	return FromBuildInfo(bi)
})

// Get is this binary's build, read once.
func Get() Info { return get() }

// FromBuildInfo reads an Info from Go's build information (nil: none).
func FromBuildInfo(bi *debug.BuildInfo) Info {
	info := Info{Version: Version}
	if bi == nil {
		return info
	}
	info.GoVersion = bi.GoVersion
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Commit = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		case "vcs.time":
			info.CommitTime = s.Value
		}
	}
	return info
}

// CommitString is the commit as the version commands print it: the
// revision, "-dirty" appended when the checkout had uncommitted changes,
// or "unknown" for a build without VCS information.
func (i Info) CommitString() string {
	switch {
	case i.Commit == "":
		return "unknown"
	case i.Modified:
		return i.Commit + "-dirty"
	}
	return i.Commit
}

// String is the one line a --version flag prints: "v0.1.0-dev (commit
// 0123abcd…)".
func (i Info) String() string {
	return i.Version + " (commit " + i.CommitString() + ")"
}
