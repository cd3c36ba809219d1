package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/gvmm-dev/gvmm/kvm"
)

func newVersionCmd(env cmdEnv) *cobra.Command {
	return &cobra.Command{
		Use:               "version",
		Short:             "gvmm's version and commit, its Go version and the host's KVM API version",
		Args:              positional(),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(*cobra.Command, []string) error {
			bi, _ := debug.ReadBuildInfo() // nil without module support: printed as unknown
			printVersion(env.stdout, bi, kvmVersion())
			return nil
		},
	}
}

// kvmVersion says which KVM API the host's /dev/kvm speaks, or why
// there is none: gvmm version answers on hosts without KVM too.
func kvmVersion() string {
	s, err := kvm.Open()
	if err != nil {
		return fmt.Sprintf("not available (%v)", err)
	}
	defer s.Close()
	// Open refuses any version but the one gvmm speaks.
	return fmt.Sprintf("%d (%s)", kvm.APIVersion, kvm.DefaultPath)
}

// printVersion writes the module version, the commit the binary was
// built from (as go build stamps it), the Go version and hostKVM.
func printVersion(w io.Writer, bi *debug.BuildInfo, hostKVM string) {
	version, commit, modified := "unknown", "unknown", false
	if bi != nil {
		version = bi.Main.Version
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if modified {
		commit += " (modified)"
	}
	fmt.Fprintf(w, "version:  %s\ncommit:   %s\ngo:       %s %s/%s\nkvm api:  %s\n",
		version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH, hostKVM)
}
