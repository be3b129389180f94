package node

// StallMembershipsWatch makes every in-process node's memberships watch
// deliver nothing new, as a watch whose consumer recreation timed out does.
func StallMembershipsWatch(on bool) { stallRoomsWatch.Store(on) }
