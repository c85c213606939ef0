"""batchdrop's shared Lambda code: domain logic and the adapters to S3, DynamoDB,
EventBridge and the Anthropic API. Shipped to Lambda as a layer."""
