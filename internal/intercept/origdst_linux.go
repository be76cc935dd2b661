package intercept

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// soOriginalDst is SO_ORIGINAL_DST (linux/netfilter_ipv4.h) and, with
// level SOL_IPV6, IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h):
// both are 80.
const soOriginalDst = 80

// OriginalDst returns the destination a connection was addressed to before
// an iptables REDIRECT (or DNAT) sent it to this listener, as netfilter's
// connection tracking recorded it. c must be a TCP connection accepted by a
// listener in the network namespace where the rule applied. An IPv4
// connection (also one accepted on a dual-stack [::] listener) is asked
// with SO_ORIGINAL_DST, an IPv6 one with IP6T_SO_ORIGINAL_DST.
//
// A connection that was not translated reports its own local address; one
// without a conntrack entry fails with an error wrapping ErrNoOriginalDst.
func OriginalDst(c net.Conn) (netip.AddrPort, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("original destination: %T is not a socket", c)
	}
	local, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("original destination: %v is not a TCP address", c.LocalAddr())
	}
	la, _ := netip.AddrFromSlice(local.IP)
	v4 := la.Unmap().Is4()
	raw, err := sc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	var (
		dst   netip.AddrPort
		opErr error
	)
	if err := raw.Control(func(fd uintptr) {
		if v4 {
			dst, opErr = originalDst4(int(fd))
		} else {
			dst, opErr = originalDst6(int(fd))
		}
	}); err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	if opErr != nil {
		if errors.Is(opErr, unix.ENOENT) {
			return netip.AddrPort{}, fmt.Errorf("%w: %v", ErrNoOriginalDst, opErr)
		}
		return netip.AddrPort{}, fmt.Errorf("original destination: getsockopt: %w", opErr)
	}
	return dst, nil
}

// originalDst4 reads a struct sockaddr_in. GetsockoptIPv6Mreq is used for
// its 20-byte buffer, which holds the 16-byte sockaddr_in: family (2
// bytes), port (2, network order), address (4).
func originalDst4(fd int) (netip.AddrPort, error) {
	m, err := unix.GetsockoptIPv6Mreq(fd, unix.SOL_IP, soOriginalDst)
	if err != nil {
		return netip.AddrPort{}, err
	}
	b := m.Multiaddr
	port := binary.BigEndian.Uint16(b[2:4])
	addr := netip.AddrFrom4([4]byte{b[4], b[5], b[6], b[7]})
	return netip.AddrPortFrom(addr, port), nil
}

// originalDst6 reads a struct sockaddr_in6 through GetsockoptIPv6MTUInfo,
// whose buffer starts with one.
func originalDst6(fd int) (netip.AddrPort, error) {
	info, err := unix.GetsockoptIPv6MTUInfo(fd, unix.SOL_IPV6, soOriginalDst)
	if err != nil {
		return netip.AddrPort{}, err
	}
	// Port holds the network-order bytes as they are in memory.
	var pb [2]byte
	binary.NativeEndian.PutUint16(pb[:], info.Addr.Port)
	port := binary.BigEndian.Uint16(pb[:])
	addr := netip.AddrFrom16(info.Addr.Addr)
	if info.Addr.Scope_id != 0 && addr.IsLinkLocalUnicast() {
		addr = addr.WithZone(fmt.Sprint(info.Addr.Scope_id))
	}
	return netip.AddrPortFrom(addr, port), nil
}
