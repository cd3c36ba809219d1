#include "go_asm.h"
#include "textflag.h"

// sigsysHandler(signo int32, info *siginfo, ctx *ucontext) is called by
// the kernel, not by Go, on the thread whose call seccomp denied. It
// writes that call's line from denyMessages to stderr and ends the
// process: no stack, no Go runtime, only two system calls the filter
// allows.
TEXT ·sigsysHandler(SB), NOSPLIT|NOFRAME, $0-0
	MOVL	8(SI), AX		// info->si_code
	CMPL	AX, $1			// SYS_SECCOMP
	JNE	other
	MOVL	24(SI), AX		// info->si_syscall, zero-extended: negative is out of range
	CMPQ	AX, $(const_msgSlots-1)
	JAE	other
	JMP	write
other:
	MOVQ	$(const_msgSlots-1), AX
write:
	SHLQ	$const_msgShift, AX
	LEAQ	·denyMessages(SB), SI
	ADDQ	AX, SI
	MOVBQZX	0(SI), DX		// length
	INCQ	SI			// text
	MOVL	$2, DI			// stderr
	MOVL	$1, AX			// SYS_write
	SYSCALL
	MOVL	$const_ExitStatus, DI
	MOVL	$231, AX		// SYS_exit_group
	SYSCALL
hang:
	JMP	hang

// func sigsysHandlerAddr() uintptr
TEXT ·sigsysHandlerAddr(SB), NOSPLIT, $0-8
	LEAQ	·sigsysHandler(SB), AX
	MOVQ	AX, ret+0(FP)
	RET
