#include "textflag.h"

// REP INS and uncached memory accesses of exact widths: Go has no in/out
// instructions, and the compiler may merge or split plain loads and stores.

// func repIns(port uint16, size int, buf unsafe.Pointer, count int)
// REP INS{B,W,L}: KVM hands up to a page of elements to the VMM per exit.
TEXT ·repIns(SB), NOSPLIT, $0-32
	MOVW port+0(FP), DX
	MOVQ buf+16(FP), DI
	MOVQ count+24(FP), CX
	MOVQ size+8(FP), AX
	CLD
	CMPQ AX, $1
	JEQ byte
	CMPQ AX, $2
	JEQ word
	REP; INSL
	RET
byte:
	REP; INSB
	RET
word:
	REP; INSW
	RET

// func load8(addr uintptr) uint8
TEXT ·load8(SB), NOSPLIT, $0-9
	MOVQ addr+0(FP), AX
	MOVB (AX), BX
	MOVB BX, ret+8(FP)
	RET

// func load16(addr uintptr) uint16
TEXT ·load16(SB), NOSPLIT, $0-10
	MOVQ addr+0(FP), AX
	MOVW (AX), BX
	MOVW BX, ret+8(FP)
	RET

// func load32(addr uintptr) uint32
TEXT ·load32(SB), NOSPLIT, $0-12
	MOVQ addr+0(FP), AX
	MOVL (AX), BX
	MOVL BX, ret+8(FP)
	RET

// func load64(addr uintptr) uint64
TEXT ·load64(SB), NOSPLIT, $0-16
	MOVQ addr+0(FP), AX
	MOVQ (AX), BX
	MOVQ BX, ret+8(FP)
	RET

// func store8(addr uintptr, v uint8)
TEXT ·store8(SB), NOSPLIT, $0-9
	MOVQ addr+0(FP), AX
	MOVB v+8(FP), BX
	MOVB BX, (AX)
	RET

// func store16(addr uintptr, v uint16)
TEXT ·store16(SB), NOSPLIT, $0-10
	MOVQ addr+0(FP), AX
	MOVW v+8(FP), BX
	MOVW BX, (AX)
	RET

// func store32(addr uintptr, v uint32)
TEXT ·store32(SB), NOSPLIT, $0-12
	MOVQ addr+0(FP), AX
	MOVL v+8(FP), BX
	MOVL BX, (AX)
	RET

// func store64(addr uintptr, v uint64)
TEXT ·store64(SB), NOSPLIT, $0-16
	MOVQ addr+0(FP), AX
	MOVQ v+8(FP), BX
	MOVQ BX, (AX)
	RET
