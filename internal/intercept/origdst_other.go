//go:build !linux

package intercept

import (
	"errors"
	"net"
	"net/netip"
)

// OriginalDst is only available on Linux, where iptables interception
// exists.
func OriginalDst(c net.Conn) (netip.AddrPort, error) {
	return netip.AddrPort{}, errors.New("original destination: transparent interception needs Linux")
}
