// goehco: a small ehco-1.1.4-style node for interoperability tests of ehco-gevent.
//
// As a server it accepts one tunnel transport and relays every tunnelled connection to a raw
// TCP remote; as a client it listens raw TCP and reaches the remote through the transport.
// Transports: raw (plain TCP relay, either mode; the benchmarks' Go baseline), ws / wss (HTTP upgrade on /ws/ or /wss/, then raw bytes as ehco 1.1.4 sends
// them), mwss (TLS + upgrade on /mwss/ + xtaci/smux) and mtcp (xtaci/smux over TCP). With
// -frames the upgraded connection carries RFC 6455 binary messages (gorilla/websocket), as
// ehco >= 1.1.5 and WebSocket proxies do; each such connection starts with a ping.
//
// Half-close: when one direction ends, the other side is half-closed where that exists (TCP,
// TLS close_notify); smux v1 streams and WebSocket messages have no half-close, so they are
// closed only once both directions are done.
//
// Known limit of xtaci/smux 1.5.16 (not of this program): OpenStream sends the SYN before it
// registers the stream, so when a server answers within microseconds (a Go server relaying a
// server-first greeting on loopback) the client drops that data. Go client -> Go server over
// smux is therefore not used by the tests.
//
// Built in GOPATH mode from Debian's golang-github-xtaci-smux-dev and
// golang-github-gorilla-websocket-dev; no network needed.
package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/xtaci/smux"
)

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

var (
	mode      = flag.String("mode", "server", "server or client")
	transport = flag.String("transport", "ws", "raw, ws, wss, mwss or mtcp")
	frames    = flag.Bool("frames", false, "RFC 6455 binary messages after the upgrade (gorilla)")
	listen    = flag.String("l", "127.0.0.1:0", "listen address")
	remote    = flag.String("r", "", "remote address host:port")
)

func smuxConfig() *smux.Config {
	cfg := smux.DefaultConfig()
	cfg.KeepAliveDisabled = true
	return cfg
}

// ---------------------------------------------------------------------------------------------
// relaying

type closeWriter interface{ CloseWrite() error }

// pipe copies both ways; at EOF of one direction it half-closes the destination if it can,
// and closes both ends once both directions are done (or one failed).
func pipe(a, b net.Conn) {
	var wg sync.WaitGroup
	var once sync.Once
	var closed atomic.Bool
	closeBoth := func() { once.Do(func() { closed.Store(true); a.Close(); b.Close() }) }
	copyDir := func(dst, src net.Conn) {
		defer wg.Done()
		_, err := io.Copy(dst, src)
		// smux's Stream.WriteTo (used by io.Copy) reports the peer's FIN as io.EOF: that is
		// the end of this direction, not a failure.
		if err != nil && !errors.Is(err, io.EOF) {
			if !closed.Load() { // not just the echo of our own closeBoth
				log.Printf("relay error %s -> %s: %v", src.RemoteAddr(), dst.RemoteAddr(), err)
			}
			closeBoth() // a real error: unblock the other direction too
			return
		}
		if cw, ok := dst.(closeWriter); ok {
			if cw.CloseWrite() != nil {
				closeBoth()
			}
		}
	}
	wg.Add(2)
	go copyDir(a, b)
	go copyDir(b, a)
	wg.Wait()
	closeBoth()
}

func relayToRemote(c net.Conn) {
	r, err := net.DialTimeout("tcp", *remote, 3*time.Second)
	if err != nil {
		log.Printf("dial remote %s: %v", *remote, err)
		c.Close()
		return
	}
	pipe(c, r)
}

// ---------------------------------------------------------------------------------------------
// connection wrappers

// bufConn reads through a bufio.Reader (bytes that came with the HTTP head belong to the
// stream) and writes / half-closes the connection underneath.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *bufConn) CloseWrite() error {
	if cw, ok := b.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return errors.New("no half-close")
}

// wsConn is a gorilla WebSocket connection as a byte stream of binary messages.
type wsConn struct {
	*websocket.Conn
	r  io.Reader
	wm sync.Mutex
}

// newWSConn wraps c and pings the peer once: a standard WebSocket peer must answer with a
// pong while it relays (the pong is logged, the tests look for it).
func newWSConn(c *websocket.Conn) *wsConn {
	c.SetPongHandler(func(string) error {
		log.Printf("pong received from %s", c.RemoteAddr())
		return nil
	})
	_ = c.WriteControl(websocket.PingMessage, []byte("goehco"), time.Now().Add(time.Second))
	return &wsConn{Conn: c}
}

func (w *wsConn) Read(p []byte) (int, error) {
	for {
		if w.r == nil {
			t, r, err := w.NextReader()
			if err != nil {
				if websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway) {
					return 0, io.EOF
				}
				return 0, err
			}
			if t != websocket.BinaryMessage && t != websocket.TextMessage {
				continue
			}
			w.r = r
		}
		n, err := w.r.Read(p)
		if err == io.EOF {
			w.r = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (w *wsConn) Write(p []byte) (int, error) {
	w.wm.Lock()
	defer w.wm.Unlock()
	if err := w.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *wsConn) Close() error {
	w.wm.Lock()
	_ = w.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	w.wm.Unlock()
	return w.Conn.Close()
}

func (w *wsConn) SetDeadline(t time.Time) error {
	if err := w.SetReadDeadline(t); err != nil {
		return err
	}
	return w.SetWriteDeadline(t)
}

// ---------------------------------------------------------------------------------------------
// TLS

func selfSigned() tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "goehco"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// ---------------------------------------------------------------------------------------------
// server side

func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + wsGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

// upgrade answers the WebSocket upgrade and returns the connection carrying the tunnel.
func upgrade(w http.ResponseWriter, r *http.Request) (net.Conn, error) {
	if *frames {
		up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return nil, err
		}
		return newWSConn(c), nil
	}
	key := r.Header.Get("Sec-WebSocket-Key")
	if key == "" {
		http.Error(w, "not a websocket upgrade", http.StatusBadRequest)
		return nil, errors.New("no Sec-WebSocket-Key")
	}
	conn, brw, err := w.(http.Hijacker).Hijack()
	if err != nil {
		return nil, err
	}
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + acceptKey(key) + "\r\n\r\n"
	if _, err := conn.Write([]byte(resp)); err != nil {
		conn.Close()
		return nil, err
	}
	return &bufConn{Conn: conn, r: brw.Reader}, nil
}

func serveSmux(c net.Conn) {
	sess, err := smux.Server(c, smuxConfig())
	if err != nil {
		log.Printf("smux server: %v", err)
		c.Close()
		return
	}
	log.Printf("session accepted from %s", c.RemoteAddr())
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return
		}
		go relayToRemote(st)
	}
}

func runServer(ln net.Listener) {
	if *transport == "mtcp" {
		for {
			c, err := ln.Accept()
			if err != nil {
				log.Fatal(err)
			}
			go serveSmux(c)
		}
	}
	path := "/" + *transport + "/"
	mux := http.NewServeMux()
	mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		c, err := upgrade(w, r)
		if err != nil {
			log.Printf("upgrade from %s: %v", r.RemoteAddr, err)
			return
		}
		if *transport == "mwss" {
			serveSmux(c)
		} else {
			relayToRemote(c)
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "access from remote ip: %s \n", r.RemoteAddr)
	})
	srv := &http.Server{Handler: mux, TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}}
	if *transport != "ws" {
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{selfSigned()}})
	}
	log.Fatal(srv.Serve(ln))
}

// ---------------------------------------------------------------------------------------------
// client side

func dialUpgrade() (net.Conn, error) {
	path := "/" + *transport + "/"
	tlsConf := &tls.Config{InsecureSkipVerify: true}
	if *frames {
		scheme := "ws"
		if *transport != "ws" {
			scheme = "wss"
		}
		d := websocket.Dialer{TLSClientConfig: tlsConf, HandshakeTimeout: 10 * time.Second}
		c, _, err := d.Dial(scheme+"://"+*remote+path, nil)
		if err != nil {
			return nil, err
		}
		return newWSConn(c), nil
	}
	var conn net.Conn
	conn, err := net.DialTimeout("tcp", *remote, 3*time.Second)
	if err != nil {
		return nil, err
	}
	if *transport != "ws" {
		tc := tls.Client(conn, tlsConf)
		if err := tc.Handshake(); err != nil {
			conn.Close()
			return nil, err
		}
		conn = tc
	}
	keyBytes := make([]byte, 16)
	rand.Read(keyBytes)
	key := base64.StdEncoding.EncodeToString(keyBytes)
	req := "GET " + path + " HTTP/1.1\r\nHost: " + *remote + "\r\nUpgrade: websocket\r\n" +
		"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols ||
		resp.Header.Get("Sec-WebSocket-Accept") != acceptKey(key) {
		conn.Close()
		return nil, fmt.Errorf("bad upgrade answer: %s", resp.Status)
	}
	return &bufConn{Conn: conn, r: br}, nil
}

func dialSessionConn() (net.Conn, error) {
	if *transport == "mtcp" {
		return net.DialTimeout("tcp", *remote, 3*time.Second)
	}
	return dialUpgrade()
}

// pool: reuse a session while it has fewer than 5 streams, as ehco does.
type pool struct {
	mu       sync.Mutex
	sessions []*smux.Session
}

func (p *pool) open() (net.Conn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	live := p.sessions[:0]
	for _, s := range p.sessions {
		if !s.IsClosed() {
			live = append(live, s)
		}
	}
	p.sessions = live
	for _, s := range p.sessions {
		if s.NumStreams() < 5 {
			if st, err := s.OpenStream(); err == nil {
				return st, nil
			}
		}
	}
	c, err := dialSessionConn()
	if err != nil {
		return nil, err
	}
	s, err := smux.Client(c, smuxConfig())
	if err != nil {
		c.Close()
		return nil, err
	}
	log.Printf("session dialed to %s", *remote)
	p.sessions = append(p.sessions, s)
	return s.OpenStream()
}

func runClient(ln net.Listener) {
	p := &pool{}
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func(c net.Conn) {
			var up net.Conn
			var err error
			if *transport == "mtcp" || *transport == "mwss" {
				up, err = p.open()
			} else {
				up, err = dialUpgrade()
			}
			if err != nil {
				log.Printf("dial %s %s: %v", *transport, *remote, err)
				c.Close()
				return
			}
			pipe(c, up)
		}(c)
	}
}

func main() {
	flag.Parse()
	log.SetOutput(os.Stdout)
	log.SetFlags(log.Lmicroseconds)
	switch *transport {
	case "raw", "ws", "wss", "mwss", "mtcp":
	default:
		log.Fatalf("unknown transport %q", *transport)
	}
	if *remote == "" {
		log.Fatal("-r is required")
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("goehco %s %s frames=%v listening on %s, remote %s", *mode, *transport, *frames,
		ln.Addr(), *remote)
	if *transport == "raw" { // a plain relay: a goroutine per connection, as ehco's raw relay
		for {
			c, err := ln.Accept()
			if err != nil {
				log.Fatal(err)
			}
			go relayToRemote(c)
		}
	}
	switch *mode {
	case "server":
		runServer(ln)
	case "client":
		runClient(ln)
	default:
		log.Fatalf("unknown mode %q", *mode)
	}
}
