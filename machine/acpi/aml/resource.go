package aml

import (
	"encoding/binary"
	"fmt"
)

// Resource descriptor tags (ACPI 6.5, 6.4).
const (
	irqNoFlagsTag  = 0x22 // small item 0x4, length 2
	ioTag          = 0x47 // small item 0x8, length 7
	endTag         = 0x79 // small item 0xf, length 1
	dwordAddrTag   = 0x87
	wordAddrTag    = 0x88
	qwordAddrTag   = 0x8a
	ioDecode16     = 1 << 0
	maxISAIRQ      = 15
	addrMinFixed   = 1 << 2
	addrMaxFixed   = 1 << 3
	addrMemRW      = 1 << 0
	addrIOEntire   = 3 // ISA and non-ISA ranges
	addrTypeMemory = 0
	addrTypeIO     = 1
	addrTypeBus    = 2
)

// Descriptor is one resource descriptor inside a ResourceTemplate.
type Descriptor interface {
	appendResource(b []byte) ([]byte, error)
}

type resourceTemplate []Descriptor

// ResourceTemplate is the ASL ResourceTemplate(): a Buffer holding the
// descriptors followed by an end tag.
func ResourceTemplate(descs ...Descriptor) Term { return resourceTemplate(descs) }

// AppendAML implements Term.
func (r resourceTemplate) AppendAML(b []byte) ([]byte, error) {
	var data []byte
	for _, d := range r {
		var err error
		if data, err = d.appendResource(data); err != nil {
			return b, err
		}
	}
	// A zero checksum tells the OS not to check it, as iasl emits.
	data = append(data, endTag, 0)
	body, err := Integer(len(data)).AppendAML(nil)
	if err != nil {
		return b, err
	}
	return appendPackage(b, []byte{bufferOp}, append(body, data...))
}

type ioPort struct {
	min, max      uint16
	align, length uint8
}

// IO is the ASL IO(Decode16, min, max, align, length) descriptor.
func IO(min, max uint16, align, length uint8) Descriptor {
	return ioPort{min: min, max: max, align: align, length: length}
}

func (p ioPort) appendResource(b []byte) ([]byte, error) {
	if p.min > p.max {
		return b, &EncodeError{What: "IO descriptor", Value: fmt.Sprintf("%#x-%#x", p.min, p.max), Reason: "minimum above maximum"}
	}
	b = append(b, ioTag, ioDecode16)
	b = binary.LittleEndian.AppendUint16(b, p.min)
	b = binary.LittleEndian.AppendUint16(b, p.max)
	return append(b, p.align, p.length), nil
}

type irqNoFlags []uint8

// IRQNoFlags is the ASL IRQNoFlags() { irqs } descriptor: ISA IRQs,
// edge-triggered, active high, exclusive.
func IRQNoFlags(irqs ...uint8) Descriptor { return irqNoFlags(irqs) }

func (q irqNoFlags) appendResource(b []byte) ([]byte, error) {
	var mask uint16
	for _, irq := range q {
		if irq > maxISAIRQ {
			return b, &EncodeError{What: "IRQ descriptor", Value: fmt.Sprint(irq), Reason: "not an ISA IRQ (0-15)"}
		}
		mask |= 1 << irq
	}
	return binary.LittleEndian.AppendUint16(append(b, irqNoFlagsTag), mask), nil
}

// MemoryAttribute is the cacheability of a memory range descriptor.
type MemoryAttribute uint8

// Memory attributes (the _MEM field).
const (
	NonCacheable   MemoryAttribute = 0
	Cacheable      MemoryAttribute = 1
	WriteCombining MemoryAttribute = 2
	Prefetchable   MemoryAttribute = 3
)

// address is an Address Space Descriptor produced by a bridge (a root
// bridge's bus range or window) with fixed minimum and maximum, positive
// decode and no translation; width is 2, 4 or 8 bytes.
type address struct {
	tag       byte
	width     int
	typ       uint8
	typeFlags uint8
	min, max  uint64
}

// WordBusNumber is ASL WordBusNumber(ResourceProducer, MinFixed, MaxFixed,
// PosDecode, 0, min, max, 0, max-min+1).
func WordBusNumber(min, max uint16) Descriptor {
	return address{tag: wordAddrTag, width: 2, typ: addrTypeBus, min: uint64(min), max: uint64(max)}
}

// WordIO is ASL WordIO(ResourceProducer, MinFixed, MaxFixed, PosDecode,
// EntireRange, 0, min, max, 0, max-min+1).
func WordIO(min, max uint16) Descriptor {
	return address{tag: wordAddrTag, width: 2, typ: addrTypeIO, typeFlags: addrIOEntire, min: uint64(min), max: uint64(max)}
}

// DWordMemory is ASL DWordMemory(ResourceProducer, PosDecode, MinFixed,
// MaxFixed, attr, ReadWrite, 0, min, max, 0, max-min+1).
func DWordMemory(attr MemoryAttribute, min, max uint32) Descriptor {
	return address{tag: dwordAddrTag, width: 4, typ: addrTypeMemory, typeFlags: memoryFlags(attr), min: uint64(min), max: uint64(max)}
}

// QWordMemory is ASL QWordMemory(ResourceProducer, PosDecode, MinFixed,
// MaxFixed, attr, ReadWrite, 0, min, max, 0, max-min+1).
func QWordMemory(attr MemoryAttribute, min, max uint64) Descriptor {
	return address{tag: qwordAddrTag, width: 8, typ: addrTypeMemory, typeFlags: memoryFlags(attr), min: min, max: max}
}

func memoryFlags(attr MemoryAttribute) uint8 { return addrMemRW | uint8(attr&3)<<1 }

func (a address) appendResource(b []byte) ([]byte, error) {
	if a.min > a.max {
		return b, &EncodeError{What: "address descriptor", Value: fmt.Sprintf("%#x-%#x", a.min, a.max), Reason: "minimum above maximum"}
	}
	// The length counts type, general flags, type flags and five values
	// (granularity, min, max, translation, length).
	b = append(b, a.tag)
	b = binary.LittleEndian.AppendUint16(b, uint16(3+5*a.width))
	b = append(b, a.typ, addrMinFixed|addrMaxFixed, a.typeFlags)
	for _, v := range []uint64{0, a.min, a.max, 0, a.max - a.min + 1} {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], v)
		b = append(b, w[:a.width]...)
	}
	return b, nil
}
