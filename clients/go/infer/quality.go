package infer

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/infer-serving/infer/clients/go/controlpb"
)

// ReportGroundTruth credits the ground truth of an earlier request, by the id it carried (RequestID), to the model
// version that answered it: labels for a classifier (one class per request row: class names, integers as text,
// "true"/"false"; see LabelText) or values for a regressor (one per row, or rows x horizon, row-major, for a
// forecaster), exactly one of the two. The reply names the version credited and the rows. A report without
// exactly one of them fails with codes.InvalidArgument before anything is sent; an id the server remembers no
// prediction for (never answered, answered by a model that tracks no accuracy, already credited) is NotFound.
func (c *Client) ReportGroundTruth(ctx context.Context, requestID string, labels []string,
	values []float64) (*controlpb.GroundTruthResponse, error) {
	if (len(labels) == 0) == (len(values) == 0) {
		return nil, status.Error(codes.InvalidArgument,
			"infer: ReportGroundTruth: give exactly one of labels (classification) and values (regression)")
	}
	return c.control.ReportGroundTruth(ctx, &controlpb.GroundTruthRequest{
		RequestId: requestID, Labels: labels, Values: values})
}

// ModelPerformance is a model version's ("" for the newest watched one) online accuracy from the reported ground
// truth over the last windowS seconds (0: since the version was loaded): accuracy, precision, recall and F1 for
// a classifier, MAE and RMSE for a regressor; figures that do not apply, or lack samples, are NaN. A model that
// tracks no accuracy is codes.FailedPrecondition.
func (c *Client) ModelPerformance(ctx context.Context, model, version string,
	windowS float64) (*controlpb.ModelPerformance, error) {
	return c.control.GetModelPerformance(ctx, &controlpb.ModelPerformanceRequest{
		Model: model, Version: version, WindowS: windowS})
}

// Drift is the latest evaluation of a model version's ("" for the newest watched one) live inputs against its
// drift reference (EvaluatedAt 0: not evaluated yet). A model without a drift reference is
// codes.FailedPrecondition.
func (c *Client) Drift(ctx context.Context, model, version string) (*controlpb.DriftReport, error) {
	return c.control.GetDrift(ctx, &controlpb.ModelPerformanceRequest{Model: model, Version: version})
}

// LabelText spells a class as ReportGroundTruth's labels carry it: strings as they are, booleans as "true" /
// "false", integers in decimal; any other value as fmt's %v.
func LabelText(v interface{}) string {
	switch x := v.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	case bool:
		if x {
			return "true"
		}
		return "false"
	}
	return fmt.Sprint(v)
}
