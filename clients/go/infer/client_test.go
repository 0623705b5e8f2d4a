package infer

// Tests of the client's options against an in-process fake server on an in-memory connection (no sockets).

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/infer-serving/infer/clients/go/inferpb"
)

type fakeServer struct {
	inferpb.UnimplementedGRPCInferenceServiceServer
	mu          sync.Mutex
	liveCalls   int
	unavailable int        // the first this many ServerLive calls answer liveCode
	liveCode    codes.Code // Unavailable unless set
	auth        []string   // authorization metadata of the last call
	deadline    bool       // whether the last ServerReady call had a deadline
}

func (f *fakeServer) ServerLive(ctx context.Context, _ *inferpb.ServerLiveRequest) (*inferpb.ServerLiveResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	md, _ := metadata.FromIncomingContext(ctx)
	f.auth = md.Get("authorization")
	f.liveCalls++
	if f.liveCalls <= f.unavailable {
		code := f.liveCode
		if code == codes.OK {
			code = codes.Unavailable
		}
		return nil, status.Errorf(code, "not yet (call %d)", f.liveCalls)
	}
	return &inferpb.ServerLiveResponse{Live: true}, nil
}

// ServerReady waits for the call's end, so that only a deadline finishes it.
func (f *fakeServer) ServerReady(ctx context.Context, _ *inferpb.ServerReadyRequest) (*inferpb.ServerReadyResponse, error) {
	_, ok := ctx.Deadline()
	f.mu.Lock()
	f.deadline = ok
	f.mu.Unlock()
	if !ok {
		return &inferpb.ServerReadyResponse{Ready: true}, nil
	}
	<-ctx.Done()
	return nil, status.FromContextError(ctx.Err()).Err()
}

// ModelInfer echoes the inputs as outputs, and the request parameters; model "missing" is NotFound.
func (f *fakeServer) ModelInfer(_ context.Context, req *inferpb.ModelInferRequest) (*inferpb.ModelInferResponse, error) {
	if req.ModelName == "missing" {
		return nil, status.Error(codes.NotFound, "model 'missing' is not in the repository")
	}
	resp := &inferpb.ModelInferResponse{ModelName: req.ModelName, ModelVersion: "7", Id: req.Id,
		Parameters: req.Parameters, RawOutputContents: req.RawInputContents}
	for _, in := range req.Inputs {
		resp.Outputs = append(resp.Outputs, &inferpb.ModelInferResponse_InferOutputTensor{
			Name: in.Name, Datatype: in.Datatype, Shape: in.Shape})
	}
	return resp, nil
}

// startFake serves a fakeServer and grpc's health server; the returned options dial it.
func startFake(t *testing.T, creds credentials.TransportCredentials) (*fakeServer, []Option) {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	opts := []grpc.ServerOption{grpc.CustomCodec(codec{})} // grpc 1.33 has no ForceServerCodec
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	srv := grpc.NewServer(opts...)
	fake := &fakeServer{}
	inferpb.RegisterGRPCInferenceServiceServer(srv, fake)
	hs := health.NewServer()
	hs.SetServingStatus("ready", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	dialer := grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return lis.Dial() })
	return fake, []Option{WithDialOptions(dialer)}
}

func dialFake(t *testing.T, opts ...Option) *Client {
	t.Helper()
	c, err := Dial("bufnet", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestRetriesUnavailableWithBackoff(t *testing.T) {
	fake, opts := startFake(t, nil)
	fake.unavailable = 2
	c := dialFake(t, append(opts, WithRetry(3, time.Millisecond, 4*time.Millisecond))...)
	live, err := c.ServerLive(context.Background())
	if err != nil || !live || fake.liveCalls != 3 {
		t.Fatalf("ServerLive = %v, %v after %d calls; want true after 3", live, err, fake.liveCalls)
	}
}

func TestRetriesStopAtMaxAttemptsWithTheLastStatus(t *testing.T) {
	fake, opts := startFake(t, nil)
	fake.unavailable = 5
	c := dialFake(t, append(opts, WithRetry(2, time.Millisecond, time.Millisecond))...)
	_, err := c.ServerLive(context.Background())
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "call 2") || fake.liveCalls != 2 {
		t.Fatalf("got %v after %d calls; want Unavailable from call 2", err, fake.liveCalls)
	}
}

func TestOnlyUnavailableIsRetried(t *testing.T) {
	fake, opts := startFake(t, nil)
	fake.unavailable, fake.liveCode = 1, codes.ResourceExhausted
	c := dialFake(t, append(opts, WithRetry(5, time.Millisecond, time.Millisecond))...)
	_, err := c.ServerLive(context.Background())
	if status.Code(err) != codes.ResourceExhausted || fake.liveCalls != 1 {
		t.Fatalf("got %v after %d calls; want ResourceExhausted after 1", err, fake.liveCalls)
	}
}

func TestRetriesEndWithTheDeadline(t *testing.T) {
	fake, opts := startFake(t, nil)
	fake.unavailable = 1000
	c := dialFake(t, append(opts, WithRetry(1000, 20*time.Millisecond, 20*time.Millisecond))...)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.ServerLive(ctx)
	// Unavailable from the last attempt, or DeadlineExceeded when the deadline falls during an attempt (the last
	// pause fitted, the call after it did not: rare, on a loaded machine).
	code := status.Code(err)
	if (code != codes.Unavailable && code != codes.DeadlineExceeded) || time.Since(start) > 2*time.Second ||
		fake.liveCalls > 11 {
		t.Fatalf("got %v after %d calls in %v", err, fake.liveCalls, time.Since(start))
	}
}

func TestBearerToken(t *testing.T) {
	fake, opts := startFake(t, nil)
	c := dialFake(t, append(opts, WithBearerToken("s3cret"))...)
	if _, err := c.ServerLive(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fake.auth, []string{"Bearer s3cret"}) {
		t.Fatalf("authorization metadata %q", fake.auth)
	}
	plain := dialFake(t, opts...)
	if _, err := plain.ServerLive(context.Background()); err != nil || len(fake.auth) != 0 {
		t.Fatalf("without a token: %v, authorization %q", err, fake.auth)
	}
}

func TestDefaultDeadline(t *testing.T) {
	fake, opts := startFake(t, nil)
	c := dialFake(t, append(opts, WithTimeout(50*time.Millisecond))...)
	start := time.Now()
	_, err := c.ServerReady(context.Background())
	if status.Code(err) != codes.DeadlineExceeded || !fake.deadline || time.Since(start) > 2*time.Second {
		t.Fatalf("ServerReady = %v after %v (deadline sent: %v)", err, time.Since(start), fake.deadline)
	}
	// A context's own deadline wins; without WithTimeout no deadline is added.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := c.ServerReady(ctx); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("with the context's deadline: %v", err)
	}
	if ready, err := dialFake(t, opts...).ServerReady(context.Background()); err != nil || !ready || fake.deadline {
		t.Fatalf("without WithTimeout: %v %v (deadline sent: %v)", ready, err, fake.deadline)
	}
}

func TestInferOverTheWire(t *testing.T) {
	_, opts := startFake(t, nil)
	c := dialFake(t, opts...)
	res, err := c.Infer(context.Background(), "echo", []Tensor{
		NewTensor("f", []int64{2, 2}, []float32{1, 2, 3, 4}),
		NewTensor("s", []int64{2, 1}, []string{"alice", "bob"}),
		NewTensor("i", []int64{1}, []int64{-5}),
	}, RequestID("r9"), Param("priority", 2), Param("key", "user-1"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Model != "echo" || res.Version != "7" || res.ID != "r9" ||
		!reflect.DeepEqual(res.Parameters, map[string]interface{}{"priority": int64(2), "key": "user-1"}) {
		t.Errorf("header %+v", res)
	}
	f, _ := Values[float32](res, "f")
	s, _ := Values[string](res, "s")
	i, _ := Values[int64](res, "i")
	if out, _ := res.Output("f"); !reflect.DeepEqual(out.Shape, []int64{2, 2}) || out.Datatype != "FP32" {
		t.Errorf("output f: %+v", out)
	}
	if !reflect.DeepEqual(f, []float32{1, 2, 3, 4}) || !reflect.DeepEqual(s, []string{"alice", "bob"}) ||
		!reflect.DeepEqual(i, []int64{-5}) {
		t.Errorf("echo: %v %v %v", f, s, i)
	}
}

func TestServerStatusIsKept(t *testing.T) {
	_, opts := startFake(t, nil)
	c := dialFake(t, opts...)
	_, err := c.Infer(context.Background(), "missing", nil)
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.NotFound || st.Message() != "model 'missing' is not in the repository" {
		t.Fatalf("error %v (status %v)", err, st)
	}
}

func TestHealth(t *testing.T) {
	_, opts := startFake(t, nil)
	c := dialFake(t, opts...)
	if s, err := c.Health(context.Background(), ""); err != nil || s != HealthServing {
		t.Errorf("Health('') = %v %v", s, err)
	}
	if s, err := c.Health(context.Background(), "ready"); err != nil || s != HealthNotServing {
		t.Errorf("Health('ready') = %v %v", s, err)
	}
	if _, err := c.Health(context.Background(), "nope"); status.Code(err) != codes.NotFound {
		t.Errorf("Health('nope') = %v", err)
	}
}

func TestDialRefusesBadOptions(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		target string
		opt    Option
		want   string
	}{
		{"", WithTimeout(time.Second), "empty target"},
		{"x:1", WithTimeout(0), "not positive"},
		{"x:1", WithRetry(0, time.Millisecond, time.Second), "maxAttempts"},
		{"x:1", WithRetry(3, time.Second, time.Millisecond), "initial <= max"},
		{"x:1", WithBearerToken(""), "empty token"},
		{"x:1", WithTLS(filepath.Join(dir, "absent.pem"), "", ""), "absent.pem"},
		{"x:1", WithTLS(notPEM, "", ""), "no PEM certificate"},
		{"x:1", WithTLS("", "cert.pem", ""), "give both or neither"},
		{"x:1", WithTLSConfig(nil), "nil config"},
	}
	for _, c := range cases {
		if _, err := Dial(c.target, c.opt); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Dial(%q, ...) error %v, want %q", c.target, err, c.want)
		}
	}
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCert(t, nil, nil, "infer test CA", nil)
	writePEM(t, dir, "ca", ca, nil)
	serverCert, serverKey := newCert(t, ca, caKey, "bufnet", []string{"bufnet"})
	clientCert, clientKey := newCert(t, ca, caKey, "client", nil)
	writePEM(t, dir, "client", clientCert, clientKey)

	pool := x509.NewCertPool()
	pool.AddCert(ca)
	creds := credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{serverCert.Raw}, PrivateKey: serverKey}},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	})
	_, opts := startFake(t, creds)
	file := func(name string) string { return filepath.Join(dir, name) }
	c := dialFake(t, append(opts, WithTLS(file("ca.pem"), file("client.pem"), file("client.key")))...)
	if live, err := c.ServerLive(context.Background()); err != nil || !live {
		t.Fatalf("over mutual TLS: %v %v", live, err)
	}
	anonymous := dialFake(t, append(opts, WithTLS(file("ca.pem"), "", ""), WithTimeout(2*time.Second))...)
	if _, err := anonymous.ServerLive(context.Background()); err == nil {
		t.Fatal("a client without a certificate got through")
	}
	untrusting := dialFake(t, append(opts, WithTLS(file("client.pem"), "", ""), WithTimeout(2*time.Second))...)
	if _, err := untrusting.ServerLive(context.Background()); status.Code(err) != codes.Unavailable {
		t.Fatalf("a client that does not trust the server's CA: %v", err)
	}
}

// newCert makes a P-256 certificate signed by parent (self-signed, a CA, when parent is nil).
func newCert(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, cn string,
	dns []string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     dns,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	signer := key
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		parent = tmpl
	} else {
		signer = parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func writePEM(t *testing.T, dir, name string, cert *x509.Certificate, key *ecdsa.PrivateKey) {
	t.Helper()
	write := func(path, kind string, der []byte) {
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(dir, name+".pem"), "CERTIFICATE", cert.Raw)
	if key != nil {
		der, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		write(filepath.Join(dir, name+".key"), "EC PRIVATE KEY", der)
	}
}
