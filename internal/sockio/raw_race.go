//go:build unix && race

package sockio

import "syscall"

// Under the race detector, reads and writes go through package syscall,
// whose Read and Write tell the detector that the kernel wrote the read
// buffer and that a write happens before the read of its bytes; raw
// system calls would hide both.

func rawRead(fd uintptr, p []byte) (int, error) {
	n, err := syscall.Read(int(fd), p)
	if err != nil {
		return 0, err
	}
	return n, nil
}

func rawWrite(fd uintptr, p []byte) (int, error) {
	n, err := syscall.Write(int(fd), p)
	if err != nil {
		return 0, err
	}
	return n, nil
}
