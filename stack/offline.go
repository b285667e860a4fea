package stack

import (
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/internals"

	"github.com/melody-flow/infra/internal/mocks"
)

// OutputValue is a stack output as the offline run resolved it.
type OutputValue struct {
	Value  any
	Secret bool
	Known  bool
}

// RunOffline runs the real program against the mock AWS with the given config (full keys) and
// returns what it registered and the outputs it would export. It makes no network call. Paths
// in the config are relative to the working directory, as in a real run from the project folder.
func RunOffline(stackName string, config map[string]string) (*mocks.Recorder, map[string]OutputValue, error) {
	outputs := map[string]OutputValue{}
	rec, err := mocks.Run(ConfigNamespace, stackName, config, func(ctx *pulumi.Context) error {
		cfg, err := LoadConfig(ctx)
		if err != nil {
			return err
		}
		exports, err := Deploy(ctx, cfg)
		if err != nil {
			return err
		}
		for name, out := range exports.Exports() {
			r, err := internals.UnsafeAwaitOutput(ctx.Context(), out)
			if err != nil {
				return err
			}
			outputs[name] = OutputValue{Value: r.Value, Secret: r.Secret, Known: r.Known}
			ctx.Export(name, out)
		}
		return nil
	})
	return rec, outputs, err
}
