package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/tests/internal/guest"
)

// kmsgReportLimit bounds the kernel messages reported per phase.
const kmsgReportLimit = 8

// kmsg reads the kernel log without waiting, so that the warnings a phase
// provoked in the guest kernel appear in the reports although the
// console is quiet.
type kmsg struct{ fd int }

func openKmsg() (*kmsg, error) {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return &kmsg{fd}, nil
}

// report reports the new messages at level warning or more urgent as
// "kmsg=PHASE:MESSAGE", at most kmsgReportLimit of them.
func (k *kmsg) report(phase string) {
	if k == nil {
		return
	}
	buf := make([]byte, 8192)
	reported, dropped := 0, 0
	for {
		n, err := unix.Read(k.fd, buf)
		if errors.Is(err, unix.EPIPE) {
			continue // overwritten records: go on with the next
		}
		if err != nil || n <= 0 {
			break
		}
		// "PRI,SEQ,TS,FLAGS;MESSAGE\n" then continuation lines.
		rec := string(buf[:n])
		head, msg, _ := strings.Cut(rec, ";")
		pri, _, _ := strings.Cut(head, ",")
		level, err := strconv.Atoi(pri)
		if err != nil || level&7 > 4 {
			continue
		}
		msg, _, _ = strings.Cut(msg, "\n")
		if reported < kmsgReportLimit {
			guest.Report("kmsg", phase+":"+msg)
			reported++
		} else {
			dropped++
		}
	}
	if dropped > 0 {
		guest.Report("kmsg", fmt.Sprintf("%s:(%d more)", phase, dropped))
	}
}
