-- Node states become a checked set in the core's words instead of free text:
-- provisioning, ready, draining, deleting, lost, or removed with the reason in its own
-- column (deleted, provision_failed, lost). Rows written before keep their meaning:
-- 'removed_{reason}' becomes state 'removed' with that reason; 'provisioned' (the VM
-- was created, the core had not yet taken it as ready) becomes 'provisioning'.

ALTER TABLE nodes ADD COLUMN removal TEXT;

UPDATE nodes SET removal = substr(state, length('removed_') + 1), state = 'removed'
WHERE state LIKE 'removed\_%';
UPDATE nodes SET state = 'provisioning' WHERE state = 'provisioned';

-- Anything else was never written by the shell: refuse to guess, name the rows.
DO $$
DECLARE
    unknown TEXT;
BEGIN
    SELECT string_agg(format('node %s: state %L, removal %L', id, state, removal), '; ' ORDER BY id)
    INTO unknown
    FROM nodes
    WHERE state NOT IN ('provisioning', 'ready', 'draining', 'deleting', 'lost', 'removed')
       OR (removal IS NOT NULL AND removal NOT IN ('deleted', 'provision_failed', 'lost'));
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'nodes rows with a state this migration cannot convert: %', unknown;
    END IF;
END
$$;

ALTER TABLE nodes
    ADD CONSTRAINT nodes_state_check
        CHECK (state IN ('provisioning', 'ready', 'draining', 'deleting', 'lost', 'removed')),
    ADD CONSTRAINT nodes_removal_check
        CHECK (removal IN ('deleted', 'provision_failed', 'lost')),
    ADD CONSTRAINT nodes_removal_iff_removed_check
        CHECK ((state = 'removed') = (removal IS NOT NULL));
