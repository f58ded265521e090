package main

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"strings"
)

// errShowVersion is what parseFlags returns for -version: main prints the
// version and exits 0, as it does for flag.ErrHelp.
var errShowVersion = errors.New("show version")

// unknown stands for what the build info does not say: a build with
// -buildvcs=false (CI sets it) has no VCS settings, and a binary built
// outside module mode has no module version.
const unknown = "unknown"

// buildVersion is what a binary says about its own build, read from the
// build info the Go toolchain stamps into it ([debug.ReadBuildInfo]).
type buildVersion struct {
	// Module is the main module's version: v1.2.3 for `go install
	// ...@v1.2.3`; for a local build the go command (1.24+) derives it from
	// the VCS: the tag of a clean checkout of a tagged commit, else a
	// pseudo-version (with +dirty for a modified tree); "(devel)" without
	// VCS information.
	Module string
	// Revision is the VCS commit (vcs.revision) and Time its commit time
	// (vcs.time, RFC 3339); "unknown" when the binary was built without
	// VCS stamping (-buildvcs=false, or from a module zip as go install
	// ...@version does).
	Revision, Time string
	// Modified reports uncommitted changes in the tree it was built from
	// (vcs.modified); false when unknown.
	Modified bool
	// GoVersion is the toolchain that built it, Platform the GOOS/GOARCH
	// it runs on (the one it was built for).
	GoVersion, Platform string
}

// readBuildVersion returns this binary's build version.
func readBuildVersion() buildVersion {
	info, ok := debug.ReadBuildInfo()
	return newBuildVersion(info, ok)
}

// newBuildVersion reads a build version from build info, as
// [debug.ReadBuildInfo] returns it (ok false: a binary without build info).
func newBuildVersion(info *debug.BuildInfo, ok bool) buildVersion {
	v := buildVersion{Module: unknown, Revision: unknown, Time: unknown, GoVersion: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if !ok || info == nil {
		return v
	}
	if info.Main.Version != "" {
		v.Module = info.Main.Version
	}
	if info.GoVersion != "" {
		v.GoVersion = info.GoVersion
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

// String is the -version line: "bridge v1.2.3 (revision 0123abcd...,
// 2026-12-01T10:00:00Z, modified) go1.26.8 linux/amd64", or with "revision
// unknown" for a build without VCS stamping.
func (v buildVersion) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "bridge %s (revision %s", v.Module, v.Revision)
	if v.Time != unknown {
		fmt.Fprintf(&b, ", %s", v.Time)
	}
	if v.Modified {
		b.WriteString(", modified")
	}
	fmt.Fprintf(&b, ") %s %s", v.GoVersion, v.Platform)
	return b.String()
}

// attrs are the version's log attributes, for the start-up line.
func (v buildVersion) attrs() []slog.Attr {
	return []slog.Attr{
		slog.String("version", v.Module),
		slog.String("revision", v.Revision),
		slog.Bool("modified", v.Modified),
		slog.String("go", v.GoVersion),
	}
}
