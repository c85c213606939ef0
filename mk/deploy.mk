# `make deploy` and `make destroy`, included by the main Makefile after mk/sam.mk (SAM, SAM_STAMP).
# The first deploy is guided: `sam deploy --guided` asks for the stack name, the region and
# every parameter (each has a default) and saves the answers in samconfig.toml, then the API
# key is asked for; every later deploy is plain `sam deploy`, from those answers.

SAMCONFIG ?= samconfig.toml
# Where `make destroy` keeps the stack's outputs between reading them and printing what is left.
DESTROY_OUTPUTS := .aws-sam/destroy-outputs.json

.PHONY: deploy api-key destroy

# The key goes into the secret the stack made right after the first deploy (asked for, not
# shown); the template never holds it (docs/security.md).
ifeq ($(wildcard $(SAMCONFIG)),)
deploy: build
	$(SAM) deploy --guided --config-file $(SAMCONFIG)
	$(SAM_BIN)/python mk/stack_config.py put-key $(SAMCONFIG) --if-unset
else
deploy: build
	$(SAM) deploy --config-file $(SAMCONFIG)
endif

# A new key into the stack's secret (the AnthropicSecretArn output), asked for at a prompt.
api-key: $(SAM_STAMP)
	$(SAM_BIN)/python mk/stack_config.py put-key $(SAMCONFIG)

# The outputs are read before the delete: they name the bucket, table, log groups and layer
# the stack keeps (DeletionPolicy Retain), which nothing can read once the stack is gone.
# `sam delete` asks before it deletes; answered no, the stack is still there and this stops.
destroy: $(SAM_STAMP)
	@test -f $(SAMCONFIG) || { echo "error: no $(SAMCONFIG): nothing was deployed from here (make deploy writes it)" >&2; exit 1; }
	mkdir -p $(dir $(DESTROY_OUTPUTS))
	stack=$$($(PYTHON) mk/stack_config.py setting $(SAMCONFIG) stack_name) && \
	region=$$($(PYTHON) mk/stack_config.py setting $(SAMCONFIG) region) && \
	$(SAM) list stack-outputs --stack-name "$$stack" --region "$$region" --output json > $(DESTROY_OUTPUTS) && \
	$(SAM) delete --stack-name "$$stack" --region "$$region" --config-file $(SAMCONFIG) && \
	if $(SAM) list stack-outputs --stack-name "$$stack" --region "$$region" > /dev/null 2>&1; then \
		echo "stack $$stack was not deleted: its bucket, table and logs are as they were" >&2; exit 1; \
	fi && \
	$(PYTHON) mk/stack_config.py retained $(DESTROY_OUTPUTS) "$$region"
	rm -f $(DESTROY_OUTPUTS)
