// A fast in-memory S3-compatible server for the object-storage benchmark (gofakes3, MIT): moto, which
// the tests use, spends ~7 ms of CPU per GET, and on a 2-core machine that CPU is taken from the job
// being measured. Built by `make install` into .tools/s3server; bench/bench_storage.py starts it.
package main

import (
	"flag"
	"log"
	"net/http"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9000", "listen address (loopback only)")
	flag.Parse()
	faker := gofakes3.New(s3mem.New())
	log.Fatal(http.ListenAndServe(*addr, faker.Server()))
}
