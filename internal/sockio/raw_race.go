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

// rawWritev writes a, and b if all of a went, with two write(2) calls.
// Once a went, it reports success with what was written: an error of the
// second call (EAGAIN, EINTR or another) comes back from the next try, which
// writes only b, so a is never written twice nor left uncounted.
func rawWritev(fd uintptr, a, b []byte) (int, error) {
	n, err := rawWrite(fd, a)
	if err != nil || n < len(a) {
		return n, err
	}
	m, err := rawWrite(fd, b)
	if err != nil {
		return n, nil
	}
	return n + m, nil
}

func rawWrite(fd uintptr, p []byte) (int, error) {
	n, err := syscall.Write(int(fd), p)
	if err != nil {
		return 0, err
	}
	return n, nil
}
