-- Version 5: since window groups came (window rows are fixed-size too), memory_samples'
-- recurrent_bytes column has held the replaced groups' whole fixed-size state: recurrent states
-- and window rows. The name now says what it holds.
ALTER TABLE memory_samples RENAME COLUMN recurrent_bytes TO fixed_state_bytes;
