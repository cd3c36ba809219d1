package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/tests/debian"
	"github.com/gvmm-dev/gvmm/tests/debkernel"
)

// bashCompletion is the package the script of gvmm completion bash
// builds on, as bash users have it: Debian installs it with bash's
// recommendations.
var bashCompletion = debian.Package{Suite: "bookworm", Name: "bash-completion", Version: "1:2.11-6"}

// TestBashCompletion loads the script gvmm completion bash writes into a
// real bash with Debian's bash-completion, and completes command lines as
// bash does on TAB: the script asks "gvmm __complete", here the test
// binary acting as gvmm.
func TestBashCompletion(t *testing.T) {
	bash, err := exec.LookPath("bash")
	require.NoError(t, err, "the completion test needs bash")
	cache, err := debkernel.CacheDir()
	require.NoError(t, err)
	bc, err := debian.Unpack(cache, bashCompletion)
	require.NoError(t, err, "fetching bash-completion")
	w := newWorld(t)
	w.define("web1")
	w.define("db2")
	script := filepath.Join(w.dir, "gvmm.bash")
	require.NoError(t, os.WriteFile(script, []byte(w.ok("completion", "bash")), 0o600))
	bin := filepath.Join(w.dir, "bin")
	require.NoError(t, os.Mkdir(bin, 0o700))
	self, err := os.Executable()
	require.NoError(t, err)
	require.NoError(t, os.Symlink(self, filepath.Join(bin, "gvmm")))

	tests := []struct {
		line string
		want []string
	}{
		{"gvmm st", []string{"start"}},
		{"gvmm s", []string{"shutdown", "snapshot", "start"}},
		{"gvmm ver", []string{"version"}},
		{"gvmm completion ", []string{"bash", "fish", "powershell", "zsh"}},
		{"gvmm start ", []string{"db2", "web1"}},
		{"gvmm start w", []string{"web1"}},
		{"gvmm start --timeout 1m ", []string{"db2", "web1"}},
		{"gvmm start --state-dir " + filepath.Join(w.dir, "none") + " ", nil},
		{"gvmm start web1 ", nil},
		{"gvmm backup web1 --state", []string{"--state-dir"}},
		{"gvmm destroy ", []string{"db2", "web1"}},
		{"gvmm console d", []string{"db2"}},
		{"gvmm run --hug", []string{"--hugepages"}},
		{"gvmm exec --kern", []string{"--kernel"}},
		{"gvmm ctl --api-socket x.sock balloon-", []string{"balloon-stats"}},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			// What bash sets before it calls a completion function.
			prog := `source "$3/usr/share/bash-completion/bash_completion"
source "$1"
COMP_LINE=$2
COMP_POINT=${#COMP_LINE}
read -ra COMP_WORDS <<<"$COMP_LINE"
[[ $COMP_LINE == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
COMP_TYPE=9
__start_gvmm gvmm "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
`
			cmd := exec.Command(bash, "--norc", "--noprofile", "-c", prog, "bash", script, tt.line, bc)
			cmd.Env = append(os.Environ(), envAsGVMM+"=1", "GVMM_STATE_DIR="+w.state,
				"PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			require.NoError(t, err, "bash: %s", stderr.String())
			var got []string
			for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
				if l = strings.TrimSpace(l); l != "" {
					got = append(got, l)
				}
			}
			assert.Equal(t, tt.want, got, "stderr: %s", stderr.String())
		})
	}
}
