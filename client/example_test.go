package client_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/client"
)

// A backend that registers, serves its vitals and drains on SIGTERM.
func ExampleBackend() {
	c, err := client.New("http://127.0.0.1:7700", nil)
	if err != nil {
		log.Fatal(err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:8080")
	ml, _ := net.Listen("tcp", "127.0.0.1:9090")
	b := &client.Backend{
		Client: c, Service: "web", ID: "web-1",
		Registration: catalog.Registration{Tags: []string{"v1", "urlprefix-/"}},
		Listener:     l, Metrics: ml,
		Vitals: client.NewVitals("1.0.0"),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "hello\n")
		}),
	}
	ctx, stop := client.SignalContext(context.Background())
	defer stop()
	if err := b.Run(ctx); err != nil {
		log.Fatal(err)
	}
}

// Calling a service by name, in-process: http://web.service.disco/ goes to
// a backend the resolver picks.
func ExampleResolver() {
	c, err := client.New("http://127.0.0.1:7700", nil)
	if err != nil {
		log.Fatal(err)
	}
	r := client.NewResolver(c)
	defer r.Close()
	hc := &http.Client{Transport: r.Transport()}
	resp, err := hc.Get("http://web.service.disco/")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
}

// Names the resolver takes.
func ExampleResolver_Parse() {
	var r client.Resolver
	for _, name := range []string{"web", "web.service.disco:80", "v2.web.service.disco", "example.com"} {
		service, tag, ok := r.Parse(name)
		fmt.Printf("%-22s service=%q tag=%q ok=%v\n", name, service, tag, ok)
	}
	// Output:
	// web                    service="web" tag="" ok=true
	// web.service.disco:80   service="web" tag="" ok=true
	// v2.web.service.disco   service="web" tag="v2" ok=true
	// example.com            service="" tag="" ok=false
}

// Vitals count a handler's requests and failures, and serve them for
// routers and agents to weigh the backend by.
func ExampleVitals() {
	v := client.NewVitals("1.0.0")
	h := v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	v.SetReady(false) // draining
	s := v.Snapshot()
	fmt.Println(s.Ready, s.FailedResponses, s.Version)
	// Output: false 1 1.0.0
}
