package exec_test

import (
	"os"
	"os/exec"
	"testing"

	"github.com/gvmm-dev/gvmm/tests/debkernel"
	"github.com/gvmm-dev/gvmm/tests/kvmhost"
)

func TestDebugExec(t *testing.T) {
	k, _ := debkernel.Get()
	for _, c := range []struct {
		dir  string
		args []string
	}{
		{"/", []string{"--rw", "--verbose", "--", kvmhost.Asset("busybox"), "echo", "hi"}},
	} {
		args := append([]string{"exec", "--kernel", k.Vmlinuz, "--modules", k.ModulesDir(), "--memory", "256M"}, c.args...)
		cmd := exec.Command(kvmhost.Asset("gvmm"), args...)
		cmd.Dir = c.dir
		out, err := cmd.CombinedOutput()
		t.Logf("%v: %v\n%s", c.args, err, out)
	}
	st, err := os.Stat(kvmhost.Asset("busybox"))
	t.Logf("busybox: %v %v", st, err)
	out, _ := exec.Command(kvmhost.Asset("busybox"), "echo", "direct").CombinedOutput()
	t.Logf("direct: %s", out)
}
