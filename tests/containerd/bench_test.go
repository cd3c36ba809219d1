package containerd_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// benchContainers are started at once by BenchmarkStartTen.
const benchContainers = 10

// BenchmarkStartTen starts ten containers of the test image at once with
// ctr run -d, which returns once the task runs, first with gvmm's
// runtime, then with runc's (Debian's runc, through containerd's runc
// shim), and reports the time until all ten ran. make bench prints it as
// a row of its table, runc in the peer's column.
func BenchmarkStartTen(b *testing.B) {
	e := startContainerd(b)
	gvmm := e.startTogether(b, "gvmm", []string{"--runtime", runtimeName, "--runtime-config-path", e.shimConf})
	// The test host's root is its initramfs, where pivot_root fails.
	runc := e.startTogether(b, "runc", []string{"--runtime", "io.containerd.runc.v2", "--no-pivot"})
	b.ReportMetric(gvmm.Seconds(), "gvmm-s")
	b.ReportMetric(runc.Seconds(), "runc-s")
	fmt.Printf("BENCHJSON {\"benchmark\":\"containerd: %d containers at once\",\"metric\":\"time until all run\",\"unit\":\"s\",\"gvmm\":%.2f,\"runc\":%.2f}\n",
		benchContainers, gvmm.Seconds(), runc.Seconds())
	fmt.Printf("BENCHMD | containerd: %d containers at once (peer: runc, not QEMU) | time until all run (s) | %.2f | %.2f | %.2f | |\n",
		benchContainers, gvmm.Seconds(), runc.Seconds(), gvmm.Seconds()/runc.Seconds())
}

// startTogether runs benchContainers containers at once with the ctr run
// flags given, checks that all run, removes them, and returns the time
// until the last ctr run -d returned.
func (e *env) startTogether(b *testing.B, name string, flags []string) time.Duration {
	var wg sync.WaitGroup
	errs := make([]error, benchContainers)
	start := time.Now()
	for i := range benchContainers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			args := append(append([]string{"run", "-d", "--snapshotter", "native"}, flags...), imageName, fmt.Sprintf("%s-%d", name, i), "sleep", "1000")
			if _, err := e.ctr(args...); err != nil {
				errs[i] = err
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, err := range errs {
		if err != nil {
			b.Fatalf("%s: %v", name, err)
		}
	}
	out, err := e.ctr("task", "ls")
	if err != nil {
		b.Fatal(err)
	}
	if n := strings.Count(out, "RUNNING"); n != benchContainers {
		b.Fatalf("%s: %d of %d containers run:\n%s", name, n, benchContainers, out)
	}
	b.Logf("%s: %d containers ran after %s", name, benchContainers, elapsed.Round(time.Millisecond))
	for i := range benchContainers {
		id := fmt.Sprintf("%s-%d", name, i)
		if _, err := e.ctr("task", "kill", "--signal", "SIGKILL", id); err != nil {
			b.Fatal(err)
		}
	}
	for i := range benchContainers {
		id := fmt.Sprintf("%s-%d", name, i)
		deadline := time.Now().Add(time.Minute)
		for e.taskStatus(id) != "STOPPED" {
			if time.Now().After(deadline) {
				b.Fatalf("%s did not stop", id)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if _, err := e.ctr("task", "delete", id); err != nil {
			b.Fatal(err)
		}
		if _, err := e.ctr("container", "delete", id); err != nil {
			b.Fatal(err)
		}
	}
	return elapsed
}
