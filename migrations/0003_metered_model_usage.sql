-- Tokens the platform's model proxy metered (ADR 23): the provider's own usage numbers for each
-- model call an agent runtime made through the proxy (`ModelUsageMetered`), per user and UTC
-- day. The tier's token quota counts these. `input_tokens` / `output_tokens` stay what the
-- runtimes reported for their runs (`RunCompleted`), a runtime's word.
ALTER TABLE daily_usage ADD COLUMN metered_input_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE daily_usage ADD COLUMN metered_output_tokens BIGINT NOT NULL DEFAULT 0;
