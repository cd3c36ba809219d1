package machine

import (
	"runtime"
	"sync"
)

// vCPU threads spend their lives in KVM_RUN, a system call. When every P
// (GOMAXPROCS) is held by such a thread, the Go runtime's sysmon takes
// the P away from each KVM_RUN that lasts over 20 µs and polls every
// 20 µs to do so; the vCPU thread then has to win a P back on every exit.
// With one vCPU and GOMAXPROCS=1 (a one-CPU host, or a container limited
// to one CPU) that made each exit to gvmm about three times as slow as
// QEMU's, and a boot 1.4-1.6 times as long (make bench). One P more than
// there are vCPUs keeps an idle P in reserve, and sysmon quiet.
//
// Each virtio queue's worker thread waits in read(2) on its doorbell the
// same way, and must find a P at once when the guest rings: with every
// P held in a system call, the woken worker waits for sysmon to retake
// one from a vCPU in KVM_RUN. So the workers count as vCPUs do.
var procs struct {
	sync.Mutex
	blocking int // vCPU and queue threads of the machines in this process
}

// reserveProcs counts n more threads that wait in system calls (vCPUs,
// queue workers) and raises GOMAXPROCS, never lowers it, to one more
// than all of them.
func reserveProcs(n int) {
	procs.Lock()
	defer procs.Unlock()
	procs.blocking += n
	if want := procs.blocking + 1; runtime.GOMAXPROCS(0) < want {
		runtime.GOMAXPROCS(want)
	}
}

// releaseProcs forgets n threads; GOMAXPROCS stays as it is.
func releaseProcs(n int) {
	procs.Lock()
	defer procs.Unlock()
	procs.blocking -= n
}
