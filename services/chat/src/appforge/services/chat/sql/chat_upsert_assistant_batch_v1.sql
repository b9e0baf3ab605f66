-- chat_upsert_assistant_batch_v1: several UpsertAssistantMessage writes in one transaction.
--
-- Each element of p_writes is the argument list of chat_upsert_assistant_v2,
-- [message_id, app_id, execution_id, items, status, metadata, now], and goes through it in
-- the array's order: the rules exist once, in v2. The result is v2's result of each
-- element, in the same order. One refused write (SQLSTATE P0001) rolls the whole batch
-- back; the caller then sends its writes one by one, so each gets its own answer.
--
-- Locking: the writer sorts a batch by app (stable, so an execution's writes keep their
-- order), so batches take app rows in one order and cannot deadlock on them.
CREATE FUNCTION chat_upsert_assistant_batch_v1(p_writes jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $fn$
DECLARE
    w jsonb;
    results jsonb := '[]'::jsonb;
BEGIN
    FOR w IN SELECT value FROM jsonb_array_elements(p_writes) LOOP
        results := results || jsonb_build_array(chat_upsert_assistant_v2(
            w->>0, w->>1, w->>2, w->3, (w->>4)::smallint, nullif(w->5, 'null'::jsonb),
            (w->>6)::bigint));
    END LOOP;
    RETURN results;
END
$fn$;
