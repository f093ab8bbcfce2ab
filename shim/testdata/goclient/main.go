// Command goclient is the Go program of shim's tests: built with cgo and
// run with GODEBUG=netdns=cgo under libdisco.so. It resolves a name with
// Go's resolver (which then calls libc's getaddrinfo), connects once
// through libc's connect (which the shim rewrites) and once with net.Dial
// (which makes the system call itself, so the shim never sees it).
package main

/*
#include <errno.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <unistd.h>

// dial connects a new socket with libc's connect: a negative errno, or the fd.
static int dial(const char *ip, int port) {
	struct sockaddr_in a;
	memset(&a, 0, sizeof a);
	a.sin_family = AF_INET;
	a.sin_port = htons(port);
	if (inet_pton(AF_INET, ip, &a.sin_addr) != 1)
		return -EINVAL;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
}
*/
import "C"

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: goclient HOST PORT")
		os.Exit(2)
	}
	host, port := os.Args[1], os.Args[2]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, host)
	if err != nil {
		fmt.Println("resolve:", err)
		os.Exit(1)
	}
	fmt.Println("resolved", strings.Join(addrs, " "))

	p, _ := strconv.Atoi(port)
	ip := C.CString(addrs[0])
	fd := C.dial(ip, C.int(p))
	C.free(unsafe.Pointer(ip))
	if fd < 0 {
		fmt.Println("libc connect:", syscall.Errno(-fd))
	} else {
		conn, err := net.FileConn(os.NewFile(uintptr(fd), "libc"))
		if err != nil {
			fmt.Println("libc connect:", err)
			os.Exit(1)
		}
		fmt.Println("libc connect:", get(conn))
	}

	conn, err := net.DialTimeout("tcp", net.JoinHostPort(host, port), 5*time.Second)
	if err != nil {
		if strings.Contains(err.Error(), "connection refused") {
			fmt.Println("net.Dial: connection refused")
		} else {
			fmt.Println("net.Dial:", err)
		}
		return
	}
	fmt.Println("net.Dial:", get(conn))
}

// get asks for / on conn and returns the body's first line.
func get(conn net.Conn) string {
	defer conn.Close()
	req, _ := http.NewRequest("GET", "http://x/", nil)
	req.Close = true
	if err := req.Write(conn); err != nil {
		return err.Error()
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}
