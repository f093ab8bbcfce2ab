package router

import (
	"io"
	"net/http"
	"time"
)

// upgrade completes a protocol upgrade (WebSocket) the backend accepted:
// the client's connection is taken over, the 101 answer passed on, and the
// two connections joined until either side closes.
func (x *exchange) upgrade(m *member, resp *http.Response, began time.Time) {
	backend, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		x.finish(http.StatusBadGateway, 0)
		plainError(x.w, http.StatusBadGateway, "discotech: the backend switched protocols but its connection cannot be written to", 0)
		return
	}
	defer backend.Close()
	client, brw, err := http.NewResponseController(x.w).Hijack()
	if err != nil {
		x.finish(http.StatusInternalServerError, 0)
		plainError(x.w, http.StatusInternalServerError, "discotech: cannot take over the connection for the upgrade (HTTP/2 has no upgrades): "+err.Error(), 0)
		return
	}
	defer client.Close()
	proto := resp.Header.Get("Upgrade")
	if proto == "" {
		proto = x.req.Header.Get("Upgrade")
	}
	removeHopByHop(resp.Header)
	resp.Header["Connection"] = []string{"Upgrade"}
	resp.Header["Upgrade"] = []string{proto}
	resp.Body = nil
	if err := resp.Write(brw); err != nil {
		x.finish(http.StatusSwitchingProtocols, 0)
		return
	}
	if err := brw.Flush(); err != nil {
		x.finish(http.StatusSwitchingProtocols, 0)
		return
	}
	x.r.m.upgrades.Inc()
	done := make(chan int64, 2)
	go func() {
		// Whatever the client sent after its request is in brw.
		n, _ := io.Copy(backend, brw.Reader)
		done <- n
	}()
	go func() {
		n, _ := io.Copy(client, backend)
		done <- n
	}()
	n := <-done
	// One side is done: close both, so the other copy ends too.
	client.Close()
	backend.Close()
	n += <-done
	x.finish(http.StatusSwitchingProtocols, n)
}
