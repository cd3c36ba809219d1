//go:build cgo

package seccomp

// In a cgo build the runtime starts threads with glibc's pthread_create
// (clone3 first, then clone; a guard page, rseq, a robust list), as a
// gvmm built with cgo does: linking runtime/cgo makes the child cases
// run that way.
import _ "runtime/cgo"
