// Quickstart: forecast the next day of an hourly series with infer's default `forecast` model.
// Usage: go run ./examples/quickstart localhost:8001
package main

import (
	"context"
	"fmt"
	"log"
	"math"
	"os"

	"github.com/infer-serving/infer/clients/go/infer"
)

func main() {
	history := make([]float32, 24*14) // two weeks of hourly requests per second, busier by day
	for i := range history {
		history[i] = float32(900 + 400*math.Sin(2*math.Pi*float64(i-6)/24))
	}

	client, err := infer.Dial(os.Args[1])
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	res, err := client.Infer(context.Background(), "forecast", []infer.Tensor{
		infer.NewTensor("history", []int64{1, int64(len(history))}, history),
		infer.NewTensor("horizon", []int64{1, 1}, []int32{24}),
	})
	if err != nil {
		log.Fatal(err)
	}
	mean, err := infer.Values[float32](res, "mean")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("the next 24 hours: %.0f\n", mean)
}
