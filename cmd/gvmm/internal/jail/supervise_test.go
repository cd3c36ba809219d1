package jail

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestMain lets this test binary be the VMM that Supervise starts: with
// EnvSpec set it confines itself and reports what it sees as JSON.
func TestMain(m *testing.M) {
	if v, ok := os.LookupEnv(EnvSpec); ok {
		os.Exit(confinedChild(v))
	}
	os.Exit(m.Run())
}

// childReport is what the confined child found.
type childReport struct {
	PID        int
	Status     map[string]string // of /proc/self/status
	Root       []string          // names in /
	Landlock   string            // why not, "" when applied
	Denied     map[string]string // attempt: its error, "" when it worked
	BindWrites string            // writing into the writable bind: its error
	Env        []string          // names in its environment
}

func confinedChild(v string) int {
	spec, err := Decode(v)
	if err != nil {
		fmt.Println(err)
		return 3
	}
	llErr, err := Enter(spec, nil)
	if err != nil {
		fmt.Println(err)
		return 4
	}
	r := childReport{PID: os.Getpid(), Status: map[string]string{}, Denied: map[string]string{}}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		r.Env = append(r.Env, k)
	}
	if llErr != nil {
		r.Landlock = llErr.Error()
	}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok {
				r.Status[k] = strings.TrimSpace(v)
			}
		}
	}
	ents, rootErr := os.ReadDir("/")
	for _, e := range ents {
		r.Root = append(r.Root, e.Name())
	}
	errText := func(err error) string {
		if err == nil {
			return ""
		}
		return err.Error()
	}
	if r.Landlock == "" {
		// Landlock allows the binds and /proc, not the root itself.
		r.Denied["list /"] = errText(rootErr)
	}
	_, err = os.ReadFile("/etc/passwd")
	r.Denied["read /etc/passwd"] = errText(err)
	r.Denied["mount"] = errText(unix.Mount("tmpfs", "/proc", "tmpfs", 0, ""))
	r.Denied["setuid 0"] = errText(unix.Setuid(0))
	r.Denied["write /"] = errText(os.WriteFile("/x", nil, 0o644))
	for _, b := range spec.Binds {
		if b.Writable {
			r.BindWrites = errText(os.WriteFile(filepath.Join(b.Path, "written"), []byte("ok"), 0o644))
		} else {
			r.Denied["write read-only bind"] = errText(os.WriteFile(filepath.Join(b.Path, "written"), nil, 0o644))
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		return 5
	}
	return 7
}

// TestSuperviseConfines runs the real thing: namespaces, pivot_root, the
// user switch. It needs root, as gvmm run --user does.
func TestSuperviseConfines(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("confinement needs root; the KVM test host runs it (tests/confine)")
	}
	rw, ro := t.TempDir(), t.TempDir()
	require.NoError(t, os.Chown(rw, 1000, 1000))
	t.Setenv("HOME", "/home/admin")
	t.Setenv("SSH_AUTH_SOCK", "/run/user/0/agent.sock")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	out, err := os.CreateTemp(t.TempDir(), "out")
	require.NoError(t, err)
	defer out.Close()
	stdout := os.Stdout
	os.Stdout = out
	code, err := Supervise(Spec{UID: 1000, GID: 1000, NewNet: true,
		Binds: []Bind{{Path: rw, Writable: true}, {Path: ro}}}, []string{os.Args[0]}, slog.Default())
	os.Stdout = stdout
	require.NoError(t, err)
	b, err := os.ReadFile(out.Name())
	require.NoError(t, err)
	require.Equal(t, 7, code, "child: %s", b)
	var r childReport
	require.NoError(t, json.Unmarshal(b, &r), "%s", b)
	t.Logf("child: %+v", r)

	assert.Equal(t, 1, r.PID, "first process of its PID namespace")
	assert.Equal(t, "1000\t1000\t1000\t1000", r.Status["Uid"])
	assert.Equal(t, "1000\t1000\t1000\t1000", r.Status["Gid"])
	for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		assert.Equal(t, "0000000000000000", r.Status[k], k)
	}
	assert.Equal(t, "1", r.Status["NoNewPrivs"])
	assert.Contains(t, r.Env, "HOME", "the kernel cache's folder")
	for _, k := range r.Env {
		assert.True(t, k == EnvSpec || slices.Contains(keptEnv, k), "the VMM inherited %s", k)
	}
	if r.Landlock == "" {
		assert.Empty(t, r.Root)
	} else {
		top := strings.Split(rw, "/")[1] // t.TempDir is under /tmp
		assert.ElementsMatch(t, []string{"proc", top}, r.Root)
	}
	for what, e := range r.Denied {
		assert.NotEmpty(t, e, "%s worked", what)
	}
	assert.Empty(t, r.BindWrites)
	got, err := os.ReadFile(filepath.Join(rw, "written"))
	require.NoError(t, err)
	assert.Equal(t, "ok", string(got))
	assert.NoFileExists(t, filepath.Join(ro, "written"))
}
